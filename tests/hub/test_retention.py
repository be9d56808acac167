"""Hub retention on SQLite and PostgreSQL: results older than keep_results_days go with their images; over the quota
or under the free-space floor images go, OK items' first, oldest first; files and rows agree; the fleet API and
the export still answer for results whose images went; the app runs it in the background."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import shutil
import zipfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from edge_orchestrator.domain import Decision, Inspection
from hub.db import Database, utcnow
from hub.retention import GIB, DiskFree, Retention, RetentionReport, disk_free
from hub.schema import images, results
from hub.settings import HubSettings
from tests.hub.conftest import (
    ADMIN,
    JPEG,
    HubFactory,
    bearer,
    decided,
    inspection,
    register,
    wait_until,
)

SIZE = len(JPEG)
NO_QUOTA = 1000.0  # GiB: far above what a test stores


class Fleet:
    """A hub (retention off: the test runs the passes) with one device that sends results and images."""

    def __init__(self, hub: TestClient, url: str, images_dir: Path) -> None:
        self.hub, self.url, self.images_dir = hub, url, images_dir
        self.token = register(hub, "pi-1", line="L1")
        self.seq = 0
        self.db = Database(url)

    def send(
        self, item: Inspection, *, days_old: float, cameras: tuple[str, ...] = ("top",), undated: bool = False
    ) -> Inspection:
        """Images first, then the result, as a device does; then its times moved `days_old` into the past."""
        for camera in cameras:
            answer = self.hub.put(
                f"/api/v1/ingest/images/{item.item_id}/{camera}", content=JPEG, headers=bearer(self.token)
            )
            assert answer.status_code == 201, answer.text
        self.seq += 1
        batch = {"results": [decided("pi-1", self.seq, item, images=cameras)]}
        answer = self.hub.post("/api/v1/ingest/results", json=batch, headers=bearer(self.token))
        assert answer.json() == {"accepted": 1, "duplicates": 0}
        then = utcnow() - timedelta(days=days_old)
        with self.db.transaction(write=True) as conn:
            conn.execute(
                update(results)
                .where(results.c.item_id == item.item_id)
                .values(decided_at=None if undated else then, received_at=then)
            )
            conn.execute(update(images).where(images.c.item_id == item.item_id).values(received_at=then))
        return item

    def image_only(self, item_id: str, *, days_old: float) -> None:
        """An image whose result never came."""
        answer = self.hub.put(
            f"/api/v1/ingest/images/{item_id}/top", content=JPEG, headers=bearer(self.token)
        )
        assert answer.status_code == 201, answer.text
        then = utcnow() - timedelta(days=days_old)
        with self.db.transaction(write=True) as conn:
            conn.execute(update(images).where(images.c.item_id == item_id).values(received_at=then))

    def prune(
        self,
        *,
        keep_results_days: int | None = None,
        quota_gb: float = NO_QUOTA,
        min_free_gb: float = 0.0,
        free: DiskFree = disk_free,
    ) -> RetentionReport:
        settings = HubSettings(
            keep_results_days=keep_results_days, images_quota_gb=quota_gb, min_free_gb=min_free_gb
        )
        return asyncio.run(Retention(self.db, self.images_dir, settings, free=free).run_once())

    def result_ids(self) -> set[str]:
        with self.db.transaction() as conn:
            return set(conn.execute(select(results.c.item_id)).scalars())

    def image_keys(self) -> set[tuple[str, str]]:
        """The image rows, after checking that rows and files agree exactly."""
        with self.db.transaction() as conn:
            rows = conn.execute(select(images.c.item_id, images.c.camera_id, images.c.path)).all()
        files = {p.relative_to(self.images_dir).as_posix() for p in self.images_dir.rglob("*") if p.is_file()}
        assert files == {path for _, _, path in rows}
        return {(item_id, camera_id) for item_id, camera_id, _ in rows}

    def close(self) -> None:
        self.db.close()


@pytest.fixture
def fleet(make_hub: HubFactory, database_url: str, tmp_path: Path) -> Iterator[Fleet]:
    hub = make_hub(database_url=database_url, retention_interval_s=0)
    seeded = Fleet(hub, database_url, tmp_path / "hub" / "images")
    yield seeded
    seeded.close()


def test_results_older_than_the_limit_go_with_their_images(fleet: Fleet) -> None:
    # given results decided 400 days ago (one without a decision time, received then), a recent one, and images
    # whose result never came, one old and one recent
    fleet.send(inspection(Decision.KO), days_old=400)
    old_ok = fleet.send(inspection(), days_old=400, cameras=("top", "side"))
    fleet.send(inspection(), days_old=400, undated=True)
    recent = fleet.send(inspection(), days_old=1)
    fleet.image_only("0" * 8 + "-0000-4000-8000-" + "0" * 12, days_old=400)
    pending = "1" * 8 + "-1111-4111-8111-" + "1" * 12
    fleet.image_only(pending, days_old=0)
    # when a pass keeps a year of results
    report = fleet.prune(keep_results_days=365)
    # then the old results are gone with their images (rows, files and the items' folders), the rest stays
    assert fleet.result_ids() == {recent.item_id}
    assert fleet.image_keys() == {(recent.item_id, "top"), (pending, "top")}
    assert not any((fleet.images_dir / "pi-1").rglob(old_ok.item_id))
    assert (report.results_deleted, report.images_deleted, report.bytes_freed) == (3, 5, 5 * SIZE)
    assert (report.ok_images_pruned, report.other_images_pruned) == (0, 0)
    assert "3 results (and 5 images) older than 365 days deleted" in report.reason
    assert report.images_bytes == 2 * SIZE
    # and a second pass finds nothing more to delete
    again = fleet.prune(keep_results_days=365)
    assert (again.results_deleted, again.images_deleted) == (0, 0)
    assert again.reason.startswith("nothing to delete")


def test_over_the_quota_ok_images_go_first_oldest_first_then_the_others(fleet: Fleet) -> None:
    # given six results with one image each: three OK, one overridden to OK, two KO, of various ages
    ok_old = fleet.send(inspection(), days_old=10)
    ok_mid = fleet.send(inspection(), days_old=5)
    ok_new = fleet.send(inspection(), days_old=1)
    overridden = fleet.send(inspection(Decision.KO, verdict=Decision.OK), days_old=20)
    ko_old = fleet.send(inspection(Decision.KO), days_old=30)
    ko_new = fleet.send(inspection(Decision.KO), days_old=2)
    # when a pass keeps images under a quota of two images
    report = fleet.prune(quota_gb=2 * SIZE / GIB)
    # then the three OK ones went (even the newest before the oldest KO), then the oldest of the others
    assert fleet.image_keys() == {(overridden.item_id, "top"), (ko_new.item_id, "top")}
    assert (report.ok_images_pruned, report.other_images_pruned, report.images_deleted) == (3, 1, 4)
    assert (report.bytes_freed, report.images_bytes) == (4 * SIZE, 2 * SIZE)
    assert "quota" in report.reason and "every OK image was gone" in report.reason
    # and no result went because of the quota
    everyone = {i.item_id for i in (ok_old, ok_mid, ok_new, overridden, ko_old, ko_new)}
    assert fleet.result_ids() == everyone
    # and the fleet API still shows every result, saying which images the hub still holds
    answer = fleet.hub.get("/api/v1/fleet/devices/pi-1/results", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    held = {r["item_id"]: r["cameras"][0]["image"] for r in answer.json()["results"]}
    assert held == {item_id: item_id in {overridden.item_id, ko_new.item_id} for item_id in everyone}
    assert fleet.hub.get(f"/api/v1/results/{ok_old.item_id}", headers=ADMIN).status_code == 200
    gone = fleet.hub.get(f"/api/v1/images/{ok_old.item_id}/top", headers=ADMIN)
    assert gone.status_code == 404
    assert fleet.hub.get(f"/api/v1/images/{ko_new.item_id}/top", headers=ADMIN).content == JPEG
    # and the export holds the two images left, none missing
    export = fleet.hub.get("/api/v1/datasets/export", headers=ADMIN)
    assert export.status_code == 200, export.text
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(export.content)).read("manifest.json"))
    assert manifest["counts"]["images"] == 2
    assert manifest["counts"]["skipped"]["missing_files"] == 0


def test_under_the_free_space_floor_the_oldest_ok_images_go_until_it_is_met(fleet: Fleet) -> None:
    # given four images: three OK of various ages and an older KO, on a disk (simulated: the images' files use
    # it) that has room for two of them above a 1 GiB floor
    fleet.send(inspection(), days_old=3)
    fleet.send(inspection(), days_old=2)
    ok_new = fleet.send(inspection(), days_old=1)
    ko = fleet.send(inspection(Decision.KO), days_old=9)
    capacity = GIB + 2 * SIZE

    def free(folder: Path) -> int:
        return capacity - sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())

    # when a pass keeps 1 GiB free
    report = fleet.prune(min_free_gb=1.0, free=free)
    # then the two oldest OK images went, and nothing else
    assert fleet.image_keys() == {(ok_new.item_id, "top"), (ko.item_id, "top")}
    assert (report.ok_images_pruned, report.other_images_pruned, report.fs_free_bytes) == (2, 0, GIB)
    assert "free on the images' disk" in report.reason
    assert len(fleet.result_ids()) == 4


def test_a_floor_no_deletion_can_meet_empties_the_images_and_stops(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    # given OK and KO images on the real disk
    for days in (1, 2, 3):
        fleet.send(inspection(), days_old=days, cameras=("top", "side"))
    for days in (1, 5):
        fleet.send(inspection(Decision.KO), days_old=days)
    # when a pass wants a petabyte free
    with caplog.at_level(logging.WARNING, logger="hub.retention"):
        report = fleet.prune(min_free_gb=1024.0**2)
    # then every image went, the OK ones counted first, every result stays, and the pass ended saying why
    assert fleet.image_keys() == set()
    assert (report.ok_images_pruned, report.other_images_pruned, report.images_bytes) == (6, 2, 0)
    assert len(fleet.result_ids()) == 5
    assert "short with no image left to delete" in report.reason
    assert report.reason in caplog.text


def test_the_app_runs_retention_in_the_background_and_survives_a_failed_pass(
    make_hub: HubFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # given a hub that keeps a day of results and prunes every 0.2 s
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    hub = make_hub(database_url=url, keep_results_days=1, retention_interval_s=0.2)
    fleet = Fleet(hub, url, tmp_path / "hub" / "images")
    try:
        # when the images folder disappears (a pass fails), then comes back with an old result sent
        with caplog.at_level(logging.ERROR, logger="hub.retention"):
            shutil.rmtree(fleet.images_dir)
            wait_until(lambda: "retention pass failed" in caplog.text)
        fleet.images_dir.mkdir()
        old = fleet.send(inspection(), days_old=2)
        kept = fleet.send(inspection(), days_old=0)
        # then a later pass deletes it, its image with it, and /metrics counts them
        wait_until(lambda: fleet.result_ids() == {kept.item_id})
        assert fleet.image_keys() == {(kept.item_id, "top")}
        assert old.item_id not in fleet.result_ids()

        def metrics() -> str:
            return str(hub.get("/metrics").text)

        wait_until(lambda: f"hub_images_bytes {float(SIZE)}" in metrics())
        assert 'hub_retention_deleted_total{what="results"} 1.0' in metrics()
        assert 'hub_retention_deleted_total{what="images"} 1.0' in metrics()
    finally:
        fleet.close()
