"""The fleet dashboard in Debian's chromium against a real hub process, seeded through the real ingest API with
registered device tokens: login, the fleet table and its live refresh, a device's rejects with their boxes, the
KPI charts' figures, and a roll-out started from the form and followed live."""

from __future__ import annotations

import json
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import yaml
from playwright.sync_api import Browser, Page, expect

from edge_orchestrator.domain import (
    CameraResult,
    Decision,
    Detection,
    ImageInfo,
    Inspection,
    ItemState,
    Prediction,
    Verdict,
)
from tests.conftest import DEMO_FRAMES
from tests.e2e.conftest import Ui, assert_readable, chromium, shot, ui
from tests.hub.conftest import ADMIN_KEY, bearer, decided, heartbeat, register, run_hub, verdict

__all__ = ["ui"]  # the e2e fixture, used here by name
pytestmark = pytest.mark.timeout(180)

# A stand-in deploy_edge (same name, hosts and variables as hub/ansible's), local and quick: each device takes a
# second, so the run page is seen following it.
DEPLOY = [
    {
        "name": "Deploy",
        "hosts": "{{ edge_target | default('edge') }}",
        "gather_facts": False,
        "serial": 1,
        "tasks": [
            {"name": "Say which release", "ansible.builtin.debug": {"msg": "release {{ edge_version }}"}},
            {"name": "Install the release", "ansible.builtin.command": "sleep 1"},
        ],
    }
]


@dataclass
class Seeded:
    base: str
    tokens: dict[str, str]
    kos: list[Inspection]  # lyon-1-a's rejects, oldest first
    overridden: Inspection  # the KO an operator overrode to OK


def truth() -> dict[str, dict[str, Any]]:
    lines = (DEMO_FRAMES / "truth.jsonl").read_text().splitlines()
    return {entry["file"]: entry for entry in map(json.loads, lines)}


def duck(decision: Decision, frame: int, at: datetime, part: str) -> Inspection:
    """A decided duck of the demo line: both cameras, each KO camera with the defects of its truth as boxes."""
    facts = truth()
    cameras = []
    for camera in ("top", "side"):
        entry = facts[f"{camera}/{frame:04d}.jpg"]
        found = [Detection(label=d["kind"], score=0.87, box=tuple(d["box"])) for d in entry["defects"]]
        ko = decision == Decision.KO and bool(found)
        cameras.append(
            CameraResult(
                camera_id=camera,
                decision=Decision.KO if ko else Decision.OK,
                reasons=[f"{len(found)} defect(s) found"] if ko else [],
                prediction=Prediction(
                    model_name="duck-detector",
                    model_version="2",
                    task="detection",
                    detections=found if ko else [],
                ),
                image=ImageInfo(width=640, height=480, bytes=1),
            )
        )
    return Inspection(
        item_id=str(uuid.uuid4()),
        station_id="duck-line",
        station_revision="rev-7",
        state=ItemState.DONE,
        source="api",
        part_id=part,
        accepted_at=at - timedelta(milliseconds=300),
        decided_at=at,
        decision=decision,
        cameras=cameras,
    )


def send(client: httpx.Client, token: str, device_id: str, items: list[Inspection], *, images: bool) -> None:
    """What a device's outbox does: each kept image first, then the results in order."""
    uploads = []
    for seq, item in enumerate(items):
        kept: tuple[str, ...] = ()
        if images and item.decision == Decision.KO:
            frame = item.metadata.get("frame")
            for camera in ("top", "side"):
                body = (DEMO_FRAMES / camera / f"{frame:04d}.jpg").read_bytes()
                answer = client.put(
                    f"/api/v1/ingest/images/{item.item_id}/{camera}",
                    content=body,
                    headers={**bearer(token), "content-type": "image/jpeg"},
                )
                assert answer.status_code == 201, answer.text
            kept = ("top", "side")
        uploads.append(decided(device_id, seq, item, kept))
    answer = client.post("/api/v1/ingest/results", json={"results": uploads}, headers=bearer(token))
    assert answer.status_code == 200 and answer.json()["accepted"] == len(items), answer.text


def beat(client: httpx.Client, token: str, device_id: str, **fields: Any) -> None:
    answer = client.post(
        "/api/v1/ingest/heartbeat", json=heartbeat(device_id, **fields), headers=bearer(token)
    )
    assert answer.status_code == 200, answer.text


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """The e2e package's chromium, ended with this module: its event loop must not outlive it."""
    with chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """A hub (reads need a login) with four devices on two lines: lyon-1-a online with 3 OK and 3 KO (images
    kept, one KO overridden), lyon-1-b stale with 1 OK and 1 KO, porto-1-a never seen, porto-1-b online with
    2 OK on another station."""
    root = tmp_path_factory.mktemp("dashboard")
    (root / "ansible").mkdir()
    (root / "ansible" / "deploy_edge.yml").write_text(yaml.safe_dump(DEPLOY, sort_keys=False))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {"lyon-1-a": local, "lyon-1-b": local}
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump({"all": {"children": {"edge": {"hosts": hosts}}}}))
    with (
        run_hub(
            root / "hub",
            HUB_OPEN_READS="false",
            HUB_ANSIBLE_DIR=str(root / "ansible"),
            HUB_INVENTORY=str(inventory),
            HUB_ANSIBLE_EXTRA_ENV=json.dumps({"ANSIBLE_LOCAL_TEMP": str(root / "tmp")}),
        ) as (base, _),
        httpx.Client(base_url=base, timeout=10) as client,
    ):
        places = {
            "lyon-1-a": ("lyon", "lyon-1"),
            "lyon-1-b": ("lyon", "lyon-1"),
            "porto-1-a": ("porto", "porto-1"),
            "porto-1-b": ("porto", "porto-1"),
        }
        tokens = {d: register(client, d, site=s, line=ln) for d, (s, ln) in places.items()}
        now = datetime.now(UTC)
        models = [{"name": "duck-detector", "version": "2", "cameras": ["top", "side"]}]
        beat(client, tokens["lyon-1-a"], "lyon-1-a", version="0.3.0", interval_s=60, models=models)
        beat(
            client, tokens["porto-1-b"], "porto-1-b", version="0.3.0", interval_s=60, station_id="duck-bench"
        )
        # lyon-1-b beats every 0.2 s, then falls silent: stale after 2.5 beats (0.5 s), offline only after 600 s
        beat(client, tokens["lyon-1-b"], "lyon-1-b", version="0.2.9", interval_s=0.2)

        kos = []
        for n, frame in enumerate((1, 3, 7)):
            item = duck(Decision.KO, frame, now - timedelta(minutes=30 - n), f"duck-{frame:04d}")
            kos.append(item.model_copy(update={"metadata": {"frame": frame}}))
        oks = [duck(Decision.OK, f, now - timedelta(minutes=20 - f), f"duck-{f:04d}") for f in (0, 2, 4)]
        send(client, tokens["lyon-1-a"], "lyon-1-a", [*kos, *oks], images=True)
        # An operator overrode the first KO: the device's outbox sends the verdict later
        first = kos[0]
        overridden = first.model_copy(
            update={"verdict": Verdict(decision=Decision.OK, operator="ana", at=now, overrides=True)}
        )
        answer = client.post(
            "/api/v1/ingest/results",
            json={"results": [verdict("lyon-1-a", 10, overridden)]},
            headers=bearer(tokens["lyon-1-a"]),
        )
        assert answer.status_code == 200, answer.text
        send(
            client,
            tokens["lyon-1-b"],
            "lyon-1-b",
            [duck(Decision.OK, 5, now, "b-1"), duck(Decision.KO, 16, now, "b-2")],
            images=False,
        )
        bench = [
            duck(Decision.OK, f, now, f"p-{f}").model_copy(update={"station_id": "duck-bench"})
            for f in (6, 8)
        ]
        send(client, tokens["porto-1-b"], "porto-1-b", bench, images=False)
        yield Seeded(base, tokens, kos, overridden)


def login(ui: Ui, base: str, path: str = "/") -> Page:
    """Open a page: the hub sends us to its login page, we give the admin key, and land where we were going."""
    page = ui.open(base, path)
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("Admin key").fill(ADMIN_KEY)
    page.get_by_test_id("login-submit").click()
    page.wait_for_url(f"{base}{path}")
    return page


def row(page: Page, device_id: str) -> Any:
    return page.locator(f'tr[data-device="{device_id}"]')


def test_a_wrong_key_is_refused_and_the_login_page_says_so(ui: Ui, hub: Seeded) -> None:
    page = ui.open(hub.base, "/kpis")
    expect(page).to_have_url(re.compile(r"/login\?next=%2Fkpis"))
    shot(page, "hub-login")
    page.get_by_label("Admin key").fill("not-the-key")
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("login-error")).to_be_visible()
    assert re.search(r"/login\?.*next=(%2F|/)kpis", page.url), page.url
    assert_readable(page)


def test_fleet_table_shows_each_device_status_version_station_and_todays_yield(ui: Ui, hub: Seeded) -> None:
    # Given lyon-1-b has been silent for more than 2.5 beats of 0.2 s
    page = login(ui, hub.base)
    # Then every device is listed with its status
    statuses = {
        d: row(page, d).locator("[data-status]") for d in ("lyon-1-a", "lyon-1-b", "porto-1-a", "porto-1-b")
    }
    expect(statuses["lyon-1-a"]).to_have_text("online")
    expect(statuses["lyon-1-b"]).to_have_text("stale")
    expect(statuses["porto-1-a"]).to_have_text("never seen")
    expect(statuses["porto-1-b"]).to_have_text("online")
    # And what each reported: version, station, models
    a = row(page, "lyon-1-a")
    expect(a.locator('[data-field="version"]')).to_have_text("0.3.0")
    expect(a.locator('[data-field="station"]')).to_have_text("duck-line")
    expect(a.locator('[data-field="models"]')).to_have_text("duck-detector v2")
    expect(row(page, "lyon-1-b").locator('[data-field="version"]')).to_have_text("0.2.9")
    expect(row(page, "porto-1-b").locator('[data-field="station"]')).to_have_text("duck-bench")
    expect(row(page, "porto-1-a").locator('[data-field="heartbeat"]')).to_have_text("never")
    # And today's figures, by the machine's decision (the override is counted apart): 3 OK of 6 is 50 %
    expect(a.locator('[data-field="total"]')).to_have_text("6")
    expect(a.locator('[data-field="yield_ratio"]')).to_have_text("50.0 %")
    expect(a.locator('[data-field="reject_rate"]')).to_have_text("50.0 %")
    expect(row(page, "lyon-1-b").locator('[data-field="yield_ratio"]')).to_have_text("50.0 %")
    expect(row(page, "porto-1-b").locator('[data-field="yield_ratio"]')).to_have_text("100.0 %")
    expect(row(page, "porto-1-a").locator('[data-field="yield_ratio"]')).to_have_text("—")
    expect(page.get_by_test_id("count-online")).to_have_text("2")
    expect(page.get_by_test_id("fleet-parts")).to_have_text("10")
    expect(page.get_by_test_id("fleet-yield")).to_have_text("60.0 %")
    expect(a.locator('[data-field="heartbeat"] .abs')).to_have_text(
        re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$")
    )
    assert_readable(page)
    shot(page, "hub-fleet")

    # When the line filter is used, only that line's devices are listed
    page.get_by_test_id("filter-line").select_option("porto-1")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_test_id("device-row")).to_have_count(2)
    expect(row(page, "lyon-1-a")).to_have_count(0)


def test_fleet_table_follows_the_fleet_without_reloading(ui: Ui, hub: Seeded) -> None:
    page = login(ui, hub.base)
    page.evaluate("window.__sameDocument = true")
    expect(row(page, "porto-1-a").locator("[data-status]")).to_have_text("never seen")
    # When the never-seen device sends its first heartbeat, and a new device is registered
    with httpx.Client(base_url=hub.base, timeout=10) as client:
        beat(client, hub.tokens["porto-1-a"], "porto-1-a", version="0.3.1", interval_s=60)
        register(client, "porto-2-a", site="porto", line="porto-2")
    # Then the table shows both within a few polls, on the same document
    expect(row(page, "porto-1-a").locator("[data-status]")).to_have_text("online", timeout=15_000)
    expect(row(page, "porto-1-a").locator('[data-field="version"]')).to_have_text("0.3.1")
    expect(row(page, "porto-2-a").locator("[data-status]")).to_have_text("never seen", timeout=15_000)
    assert page.evaluate("window.__sameDocument") is True


def test_device_page_shows_its_rejects_with_their_boxes_and_the_operators_verdict(
    ui: Ui, hub: Seeded
) -> None:
    page = login(ui, hub.base)
    row(page, "lyon-1-a").get_by_role("link", name="lyon-1-a").click()
    expect(page.get_by_test_id("device-id")).to_have_text("lyon-1-a")
    # Then the three rejects are shown, newest first, each with both cameras' images
    cards = page.get_by_test_id("ko")
    expect(cards).to_have_count(3)
    newest_first = [item.item_id for item in reversed(hub.kos)]
    assert [cards.nth(i).get_attribute("data-item") for i in range(3)] == newest_first
    images = page.locator('[data-testid="ko"] img')
    expect(images).to_have_count(6)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=ko] img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    # And one box per defect the models found, drawn over the image where the defect is
    expected_boxes = sum(
        len(c.prediction.detections) for item in hub.kos for c in item.cameras if c.prediction
    )
    boxes = page.get_by_test_id("ko-box")
    expect(boxes).to_have_count(expected_boxes)
    first_top = cards.nth(2).locator('[data-camera="top"]')
    frame, box = (
        first_top.locator(".shot-frame").bounding_box(),
        first_top.get_by_test_id("ko-box").bounding_box(),
    )
    assert frame and box
    truth_box = hub.kos[0].cameras[0].prediction.detections[0].box  # type: ignore[union-attr]
    assert abs((box["x"] - frame["x"]) / frame["width"] - truth_box[0]) < 0.02
    assert abs((box["y"] - frame["y"]) / frame["height"] - truth_box[1]) < 0.02
    expect(first_top.get_by_test_id("ko-box")).to_contain_text("wrong colour 87 %")
    # And the operator's verdict on the overridden one
    expect(cards.nth(2).get_by_test_id("ko-verdict")).to_have_text("Operator: OK (overridden)")
    expect(cards.nth(0).get_by_test_id("ko-verdict")).to_have_count(0)
    # And its trends: the parts decided in the last 24 h
    volume = page.locator('[data-testid="trend-volume"]')
    assert "Parts decided per hour (UTC)" in (volume.get_attribute("aria-label") or "")
    assert sum(int(n) for n in re.findall(r"\d\d:00 (\d+)", volume.get_attribute("aria-label") or "")) == 6
    expect(page.locator('[data-testid="trend-ready"]')).to_have_attribute(
        "aria-label", re.compile(r"ready .*100\s%")
    )
    assert_readable(page)
    shot(page, "hub-device")


def test_kpi_charts_state_the_figures_per_line_and_station(ui: Ui, hub: Seeded) -> None:
    page = login(ui, hub.base, "/kpis")

    def label(testid: str) -> str:
        return page.get_by_test_id(testid).get_attribute("aria-label") or ""

    # lyon-1: 6 + 2 parts, 3 + 1 OK, 3 + 1 KO; porto-1: 2 OK (duck-bench)
    assert label("kpi-line-volume-today") == "Parts decided today per line: lyon-1 8, porto-1 2"
    assert label("kpi-line-yield-today") == "Yield today per line: lyon-1 50.0 %, porto-1 100.0 %"
    assert label("kpi-line-reject-today") == "Reject rate today per line: lyon-1 50.0 %, porto-1 0.0 %"
    assert label("kpi-station-yield-today") == "Yield today per station: duck-bench 100.0 %, duck-line 50.0 %"
    assert label("kpi-fleet-yield") == "Fleet yield today: 60.0 % (OK 6, KO 4, NO_DECISION 0)"
    today = datetime.now(UTC).strftime("%m-%d")
    days = label("kpi-line-volume-days") or ""
    assert days.startswith("Parts decided per day per line: ") and days.endswith(f"{today} 10"), days
    assert re.search(rf"lyon-1 .*{today} 50\s%", label("kpi-line-yield-days") or "")
    # the fleet's donut and days, five charts per line and six per station
    expect(page.locator('svg[role="img"]')).to_have_count(13)
    assert_readable(page)
    shot(page, "hub-kpis")


def test_a_roll_out_started_from_the_form_is_followed_live_and_listed(ui: Ui, hub: Seeded) -> None:
    page = login(ui, hub.base, "/rollouts")
    # When deploy_edge 0.4.0 is started on the edge group from the form
    page.get_by_label("Playbook").select_option("deploy_edge")
    page.get_by_label("Target").fill("edge")
    page.get_by_label("Edge version").fill("0.4.0")
    page.get_by_test_id("rollout-start").click()
    # Then the run page follows it device by device until it succeeded
    page.wait_for_url(re.compile(r"/rollouts/\d+$"))
    rollout_id = page.url.rsplit("/", 1)[-1]
    expect(page.get_by_test_id("rollout-status")).to_have_text("successful", timeout=60_000)
    hosts = page.get_by_test_id("host-row")
    expect(hosts).to_have_count(2)
    for host in ("lyon-1-a", "lyon-1-b"):
        expect(page.locator(f'tr[data-host="{host}"] [data-testid="host-status"]')).to_have_text(
            re.compile("^(ok|changed)$")
        )
    expect(page.locator("[data-events] li").last).to_contain_text("rollout_finished")
    assert_readable(page)
    shot(page, "hub-rollout-run")
    # And the Roll-outs page lists the run
    page.get_by_role("link", name="All roll-outs").click()
    listed = page.locator(f'tr[data-rollout="{rollout_id}"]')
    expect(listed).to_contain_text("deploy_edge")
    expect(listed).to_contain_text("version 0.4.0")
    expect(listed.get_by_test_id("rollout-row-status")).to_have_text("successful")
    shot(page, "hub-rollouts")


def test_the_fleet_api_needs_the_key_and_names_what_it_cannot_find(hub: Seeded) -> None:
    ko = hub.kos[0]
    with httpx.Client(base_url=hub.base, timeout=10) as client:
        # Reads need the admin key (or a session) when reads are not open
        anonymous = client.get("/api/v1/fleet")
        assert anonymous.status_code == 401 and anonymous.json()["code"] == "unauthorized"
        admin = {"Authorization": f"Bearer {ADMIN_KEY}"}
        # The stored image is served as the device sent it
        image = client.get(f"/api/v1/images/{ko.item_id}/top", headers=admin)
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
        assert image.content == (DEMO_FRAMES / "top" / "0001.jpg").read_bytes()
        # A result carries the item and the operator's verdict
        result = client.get(f"/api/v1/results/{ko.item_id}", headers=admin).json()
        assert (result["decision"], result["verdict"], result["final"]) == ("KO", "OK", "OK")
        assert result["item"]["verdict"]["operator"] == "ana"
        # What does not exist is a 404 with its code; a bad query is a 422
        missing = {
            f"/api/v1/images/{ko.item_id}/front": "image_not_found",
            f"/api/v1/images/{uuid.uuid4()}/top": "image_not_found",
            f"/api/v1/results/{uuid.uuid4()}": "result_not_found",
            "/api/v1/fleet/devices/nowhere": "device_not_found",
            "/api/v1/fleet/devices/nowhere/results": "device_not_found",
            "/api/v1/fleet/devices/nowhere/trends": "device_not_found",
        }
        for path, code in missing.items():
            answer = client.get(path, headers=admin)
            assert (answer.status_code, answer.json()["code"]) == (404, code), path
        for path in (
            "/api/v1/fleet/kpis?days=0",
            "/api/v1/fleet/kpis?days=many",
            "/api/v1/fleet/devices/lyon-1-a/results?decision=MAYBE",
            "/api/v1/fleet/devices/lyon-1-a/results?limit=0",
            "/api/v1/fleet/devices/lyon-1-a/trends?hours=1000",
        ):
            answer = client.get(path, headers=admin)
            assert answer.status_code == 422 and answer.json()["code"] == "validation_error", path
        # The filters and limits of the reads
        assert [
            d["device_id"] for d in client.get("/api/v1/fleet?site=porto", headers=admin).json()["devices"]
        ][:2] == ["porto-1-a", "porto-1-b"]
        latest = client.get("/api/v1/fleet/devices/lyon-1-a/results?limit=2", headers=admin).json()["results"]
        assert [r["decision"] for r in latest] == ["OK", "OK"]
