"""The hub link on the real results database against a fake hub over HTTP: image sampling, results with their
images uploaded first, batches, the hub's answers mapped to delivered / retried / parked, heartbeat counts."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from edge_orchestrator.domain import Decision, Inspection, Verdict, new_item_id, utcnow
from edge_orchestrator.hub_link import CHANNEL, DeviceState, HubLink, sample_point, sends_images
from edge_orchestrator.outbox import Outbox
from edge_orchestrator.retention import StoragePolicy
from edge_orchestrator.storage import Store
from edge_orchestrator.telemetry import HealthReport, ResultBatch
from tests.unit.test_outbox import eventually
from tests.unit.test_storage import KEEP_ALL, accepted, decided, jpegs

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def item(decision: Decision, verdict: Decision | None = None) -> Inspection:
    done = decided(accepted(), decision)
    if verdict is None:
        return done
    return done.model_copy(
        update={"verdict": Verdict(decision=verdict, at=utcnow(), overrides=verdict != decision)}
    )


def test_ko_no_decision_and_overridden_items_always_send_their_images() -> None:
    for _ in range(50):
        assert sends_images(item(Decision.KO), 0.0)
        assert sends_images(item(Decision.NO_DECISION), 0.0)
        assert sends_images(item(Decision.OK, verdict=Decision.KO), 0.0)
        assert sends_images(item(Decision.KO, verdict=Decision.OK), 0.0)


def test_ok_items_send_a_deterministic_share() -> None:
    ok = item(Decision.OK)
    oks = [ok.model_copy(update={"item_id": new_item_id()}) for _ in range(10_000)]
    chosen = [i for i in oks if sends_images(i, 0.05)]
    # Close to the share (binomial: 500 ± 22 for one sigma)
    assert 400 <= len(chosen) <= 600
    # And the same choice every time, so a redelivery (or a confirmation) sends the same images
    assert [i for i in oks if sends_images(i, 0.05)] == chosen
    confirmed = [
        i.model_copy(update={"verdict": Verdict(decision=Decision.OK, at=utcnow(), overrides=False)})
        for i in oks
    ]
    assert [i.item_id for i in confirmed if sends_images(i, 0.05)] == [i.item_id for i in chosen]
    assert all(0 <= sample_point(i.item_id) < 1 for i in oks)
    assert not any(sends_images(i, 0.0) for i in oks[:100]) and all(sends_images(i, 1.0) for i in oks[:100])


class FakeHub:
    """The hub as a device sees it over HTTP: records what arrives; `refuse` decides the answer first."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.results: list[dict[str, object]] = []
        self.images: dict[tuple[str, str], bytes] = {}
        self.beats: list[dict[str, object]] = []
        self.refuse: Callable[[httpx.Request], httpx.Response | None] = lambda request: None

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.calls.append((request.method, request.url.path))
        refused = self.refuse(request)
        if refused is not None:
            return refused
        path = request.url.path
        if path == "/api/v1/ingest/heartbeat":
            self.beats.append(json.loads(request.content))
            return httpx.Response(200, json={"received_at": utcnow().isoformat()})
        if path.startswith("/api/v1/ingest/images/"):
            _, item_id, camera_id = path.rsplit("/", 2)
            self.images[(item_id, camera_id)] = request.content
            return httpx.Response(201, json={})
        batch = ResultBatch.model_validate_json(request.content)
        self.results += [r.model_dump(mode="json") for r in batch.results]
        return httpx.Response(200, json={"accepted": len(batch.results), "duplicates": 0})


def refusal(status: int, code: str) -> httpx.Response:
    return httpx.Response(status, json={"detail": f"refused: {code}", "code": code})


@contextlib.asynccontextmanager
async def device(
    tmp_path: Path, hub: FakeHub, *, ok_share: float = 0.0, start: bool = True
) -> AsyncIterator[tuple[Store, Outbox, HubLink]]:
    async with Store(tmp_path / "data") as store:
        outbox = Outbox(store, "dev-7", [CHANNEL], verdict_channels=[CHANNEL])
        store.queue_verdicts(outbox)

        async def state() -> DeviceState:
            return DeviceState("duck-line", "rev1", [], HealthReport(ready=True), settled_until=utcnow())

        link = HubLink(
            "http://hub.test",
            "device-token",
            device_id="dev-7",
            store=store,
            outbox=outbox,
            state=state,
            heartbeat_s=3600,  # beats are sent by the tests, one at a time
            ok_image_share=ok_share,
            backoff_s=(0.01, 0.05),
            max_attempts=2,
            transport=httpx.MockTransport(hub.handle),
        )
        if start:
            await link.start()
        try:
            yield store, outbox, link
        finally:
            await link.stop()


async def decide(
    store: Store,
    outbox: Outbox,
    decision: Decision,
    policy: StoragePolicy = KEEP_ALL,
    at: datetime | None = None,
) -> str:
    first = accepted(at or utcnow())
    await store.accept(first)
    result = decided(first, decision, latency_ms=0)  # decided now, not in the future
    await store.complete(result, jpegs(result), policy, outbox.entries)
    outbox.notify()
    return first.item_id


async def test_results_go_in_order_with_their_sampled_images_uploaded_first(tmp_path: Path) -> None:
    hub = FakeHub()
    async with device(tmp_path, hub) as (store, outbox, link):
        # Given a KO, an OK (no OK share) and a KO whose images were never saved (save_images: none)
        ko = await decide(store, outbox, Decision.KO)
        ok = await decide(store, outbox, Decision.OK)
        bare = await decide(store, outbox, Decision.KO, StoragePolicy(save_images="none", min_free_mb=0))
        await eventually(lambda: len(hub.results) == 3)
        # Then the results arrive in order, listing the images that were uploaded before them
        assert [(r["item"]["item_id"], r["images"], r["event"]) for r in hub.results] == [  # type: ignore[index]
            (ko, ["top", "side"], "inspection.decided"),
            (ok, [], "inspection.decided"),
            (bare, [], "inspection.decided"),
        ]
        assert [r["seq"] for r in hub.results] == sorted(r["seq"] for r in hub.results)  # type: ignore[type-var]
        assert hub.images == {
            (ko, c): jpegs(decided(accepted(item_id=ko), Decision.KO))[c] for c in ("top", "side")
        }
        first_post = hub.calls.index(("POST", "/api/v1/ingest/results"))
        assert hub.calls[:first_post].count(("PUT", f"/api/v1/ingest/images/{ko}/top")) == 1
        # When an operator overrides the OK item, its verdict follows with its images
        await store.set_verdict(ok, Decision.KO, "dent", "ana")
        await eventually(lambda: len(hub.results) == 4)
        assert (hub.results[3]["event"], hub.results[3]["images"]) == ("inspection.verdict", ["top", "side"])
        assert link.status().up and link.status().state == "connected"
        assert [d.pending for d in await outbox.depth()] == [0]


async def test_a_refused_token_keeps_every_result_and_shows_why(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.refuse = lambda request: refusal(401, "invalid_token")
    async with device(tmp_path, hub) as (store, outbox, link):
        ids = [await decide(store, outbox, Decision.KO) for _ in range(3)]
        # When the hub refuses the token, nothing is dropped and the link says why
        assert not await link.beat()
        await eventually(lambda: ("POST", "/api/v1/ingest/results") in hub.calls or len(hub.calls) > 1)
        status = link.status()
        assert (status.up, status.state) == (False, "retrying")
        assert status.detail == "hub refused the token (401 invalid_token)"
        assert [(d.pending, d.parked) for d in await outbox.depth()] == [(3, 0)]
        # When the hub takes the token again, the next heartbeat ends the long wait and all is delivered
        hub.refuse = lambda request: None
        assert await link.beat()
        await eventually(lambda: len(hub.results) == 3)
        assert [r["item"]["item_id"] for r in hub.results] == ids  # type: ignore[index]
        assert link.status().up


async def test_a_result_the_hub_refuses_in_a_batch_is_found_and_parked_alone(tmp_path: Path) -> None:
    hub = FakeHub()
    async with device(tmp_path, hub, start=False) as (store, outbox, link):
        ids = [await decide(store, outbox, Decision.OK) for _ in range(4)]
        # Given the hub refuses (422) any batch holding the second result
        hub.refuse = lambda request: (
            refusal(422, "validation_error")
            if request.url.path.endswith("/results") and ids[1].encode() in request.content
            else None
        )
        await link.start()
        await eventually(lambda: len(hub.results) == 3)
        # Then the others arrive in order, and the refused one is parked after max_attempts (kept, shown)
        assert [r["item"]["item_id"] for r in hub.results] == [ids[0], ids[2], ids[3]]  # type: ignore[index]
        # (the acknowledged ones leave the outbox just after the hub's answer)
        for _ in range(500):
            depth = [(d.pending, d.parked) for d in await outbox.depth()]
            if depth == [(0, 1)]:
                break
            await asyncio.sleep(0.01)
        assert depth == [(0, 1)]
        status = link.status()
        assert status.up


async def test_heartbeat_counts_every_decision_once_from_the_last_acknowledged_beat(tmp_path: Path) -> None:
    hub = FakeHub()
    hub.refuse = lambda request: (
        refusal(503, "unavailable") if request.url.path.endswith("/heartbeat") else None
    )
    # (the beats are sent by the test alone: no heartbeat loop)
    async with device(tmp_path, hub, start=False) as (store, outbox, link):
        await decide(store, outbox, Decision.OK)
        await decide(store, outbox, Decision.KO)
        # When the hub misses a beat, its counts come again in the next one
        assert not await link.beat()
        await decide(store, outbox, Decision.NO_DECISION)
    # (and across a restart of the device)
    async with device(tmp_path, hub, start=False) as (store, outbox, link):
        hub.refuse = lambda request: None
        assert await link.beat()
        [beat] = hub.beats
        assert beat["counts"] == {"ok": 1, "ko": 1, "no_decision": 1}
        assert beat["device_id"] == "dev-7" and beat["station_id"] == "duck-line"
        assert beat["outbox"][0]["channel"] == CHANNEL  # type: ignore[index]
        # Then the next beat starts where the acknowledged one ended, and counts only what came since
        await decide(store, outbox, Decision.KO)
        await asyncio.sleep(0.01)
        assert await link.beat()
        assert hub.beats[1]["since"] == beat["sent_at"]
        assert hub.beats[1]["counts"] == {"ok": 0, "ko": 1, "no_decision": 0}
        # And a decision dated before the window is not counted again
        await decide(store, outbox, Decision.OK, at=utcnow() - timedelta(days=3))
        assert await link.beat()
        assert hub.beats[2]["counts"] == {"ok": 0, "ko": 0, "no_decision": 0}
