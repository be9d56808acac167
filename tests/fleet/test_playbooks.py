"""The roll-out playbooks (hub/ansible) on a simulated fleet of three devices, over real SSH, with real services.

The tests run in order on one fleet: deploy, inspect, redeploy (idempotence), a broken release stopped after its
first batch and rolled back, a model swapped under continuous inspections, a rollback, and the facts report.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.fleet.fleet import GOOD_VERSION, REPO, Device, Fleet, PlaybookRun, build_artifacts, release_copy
from tests.hub.conftest import ADMIN as HUB_ADMIN
from tests.hub.conftest import run_hub

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

BROKEN_VERSION = "0.1.1"
NEXT_VERSION = "0.1.2"
ORCHESTRATOR = 8000
DURATIONS: dict[str, float] = {}


@pytest.fixture(scope="module", autouse=True)
def report_durations(fleet: Fleet) -> Iterator[None]:
    started = time.monotonic()
    yield
    DURATIONS["module_s"] = time.monotonic() - started + fleet.timings.get("fleet_s", 0.0)
    lines = [f"{k}: {v:.1f} s" for k, v in {**fleet.timings, **DURATIONS}.items()]
    (fleet.work / "durations.txt").write_text("\n".join(lines) + "\n")
    print("\nfleet test durations:\n  " + "\n  ".join(lines))


def timed(name: str, run: PlaybookRun) -> PlaybookRun:
    DURATIONS[name] = run.seconds
    return run


def assert_ok(run: PlaybookRun, hosts: list[str]) -> None:
    assert run.returncode == 0, run.output[-6000:]
    assert sorted(run.recap) == sorted(hosts), run.output[-3000:]
    for host, counts in run.recap.items():
        assert counts["failed"] == 0 and counts["unreachable"] == 0, f"{host}: {counts}\n{run.output[-3000:]}"


def names(fleet: Fleet) -> list[str]:
    return [d.name for d in fleet.devices]


def system(fleet: Fleet, device: Device) -> dict[str, Any]:
    response = httpx.get(
        device.url(ORCHESTRATOR, "/api/v1/system"),
        headers={"Authorization": f"Bearer {fleet.api_key}"},
        timeout=10,
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def inspect(fleet: Fleet, device: Device, client: httpx.Client | None = None) -> dict[str, Any]:
    post = client.post if client is not None else httpx.post
    response = post(
        device.url(ORCHESTRATOR, "/api/v1/inspections?wait=10"),
        headers={"Authorization": f"Bearer {fleet.api_key}"},
        json={},
        timeout=15,
    )
    assert response.status_code == 200, f"{device.name}: {response.status_code} {response.text}"
    result: dict[str, Any] = response.json()
    return result


def link(fleet: Fleet, device: Device, name: str) -> str:
    return fleet.ssh(device, f"readlink {fleet_path(name)} || true").strip()


def fleet_path(name: str) -> str:
    return f"/opt/edge/{name}"


@pytest.fixture(scope="module")
def deployed(fleet: Fleet) -> PlaybookRun:
    # One batch: the batches themselves are proven by the broken roll-out below.
    return timed("deploy_s", fleet.playbook("deploy_edge.yml", "-e", '{"edge_serial": [3]}'))


def test_deploy_brings_every_device_to_healthy(fleet: Fleet, deployed: PlaybookRun) -> None:
    assert_ok(deployed, names(fleet))
    for device in fleet.devices:
        ready = httpx.get(device.url(ORCHESTRATOR, "/health/ready"), timeout=10)
        assert ready.status_code == 200, f"{device.name}: {ready.text}"
        info = system(fleet, device)
        assert info["version"] == GOOD_VERSION
        assert info["station"] == "duck-line"
        assert info["api_key_source"] != "generated", "the key must come from the vault, not be generated"
        assert link(fleet, device, "current") == f"/opt/edge/releases/{GOOD_VERSION}"
        # The service user exists on the device only (its own /etc), and runs the services.
        assert fleet.ssh(device, "id -un edge").strip() == "edge"
    assert "edge:" not in Path("/etc/passwd").read_text(), "the device's user must not leak into the host"


def test_an_inspection_on_each_device_returns_a_decision(fleet: Fleet, deployed: PlaybookRun) -> None:
    for device in fleet.devices:
        item = inspect(fleet, device)
        assert item["decision"] in {"OK", "KO", "NO_DECISION"}, item
        assert [c["camera_id"] for c in item["cameras"]] == ["top", "side"]
        assert all(c["error_code"] is None for c in item["cameras"]), item


def test_a_second_deploy_changes_nothing(fleet: Fleet, deployed: PlaybookRun) -> None:
    run = timed("deploy_again_s", fleet.playbook("deploy_edge.yml", "-e", '{"edge_serial": [3]}'))
    assert_ok(run, names(fleet))
    assert run.changed() == dict.fromkeys(names(fleet), 0), run.output[-4000:]


def test_a_broken_release_stops_after_the_first_batch_and_is_rolled_back(
    fleet: Fleet, deployed: PlaybookRun
) -> None:
    # Given a release whose orchestrator exits at start
    broken = fleet.work / "artifacts-broken"
    build_artifacts(broken, release_copy(fleet.work, BROKEN_VERSION, broken=True), wheelhouse=False)
    others = fleet.devices[1:]
    uptimes = {d.name: system(fleet, d)["uptime_s"] for d in others}
    # When it is rolled out in batches of one device, then the rest
    run = timed(
        "broken_rollout_s",
        fleet.playbook(
            "deploy_edge.yml",
            "-e",
            json.dumps(
                {
                    "edge_version": BROKEN_VERSION,
                    "edge_dist_dir": str(broken / "dist"),
                    "edge_serial": [1, 2],
                    "edge_health_timeout_s": 25,
                }
            ),
        ),
    )
    # Then the roll-out fails and stops after the first batch
    first = fleet.devices[0]
    assert run.returncode != 0, run.output[-4000:]
    assert list(run.recap) == [first.name], run.output[-4000:]
    assert run.recap[first.name]["rescued"] == 1, run.output[-4000:]
    assert "the roll-out stops here" in run.output
    # and the first device is back on the good release, healthy
    assert link(fleet, first, "current") == f"/opt/edge/releases/{GOOD_VERSION}"
    assert link(fleet, first, "previous") == ""
    assert httpx.get(first.url(ORCHESTRATOR, "/health/ready"), timeout=10).status_code == 200
    assert system(fleet, first)["version"] == GOOD_VERSION
    assert inspect(fleet, first)["decision"] is not None
    # and the others were never touched: no new release, services never restarted
    for device in others:
        assert fleet.ssh(device, "ls /opt/edge/releases").split() == [GOOD_VERSION]
        assert system(fleet, device)["uptime_s"] > uptimes[device.name]


class Inspector(threading.Thread):
    """Triggers inspections on one device back to back until stopped (bounded in count and time)."""

    def __init__(self, fleet: Fleet, device: Device, max_items: int = 2000, max_s: float = 300) -> None:
        super().__init__(daemon=True)
        self.fleet, self.device, self.max_items, self.max_s = fleet, device, max_items, max_s
        self.stop = threading.Event()
        self.results: list[dict[str, Any]] = []
        self.errors: list[str] = []

    def run(self) -> None:
        deadline = time.monotonic() + self.max_s
        with httpx.Client() as client:
            while (
                not self.stop.is_set() and len(self.results) < self.max_items and time.monotonic() < deadline
            ):
                try:
                    self.results.append(inspect(self.fleet, self.device, client))
                except (AssertionError, httpx.HTTPError) as exc:
                    self.errors.append(f"{type(exc).__name__}: {exc}")
                self.stop.wait(0.05)


def test_update_models_swaps_a_model_without_a_failed_inspection(fleet: Fleet, deployed: PlaybookRun) -> None:
    # Given every device inspecting continuously
    inspectors = [Inspector(fleet, d) for d in fleet.devices]
    for inspector in inspectors:
        inspector.start()
    time.sleep(1)
    # When duck-detector version 2 (the same files as version 1) is shipped
    try:
        run = timed(
            "update_models_s",
            fleet.playbook("update_models.yml", *MODEL_ARGS, "-e", '{"edge_serial": [1, 2]}'),
        )
        time.sleep(1)  # a few inspections on the new version
    finally:
        for inspector in inspectors:
            inspector.stop.set()
        for inspector in inspectors:
            inspector.join(timeout=30)
    # Then every device serves it, and not one inspection failed during the swap
    assert_ok(run, names(fleet))
    for inspector in inspectors:
        name = inspector.device.name
        assert not inspector.errors, f"{name}: {inspector.errors[:3]}"
        assert len(inspector.results) >= 5, f"{name}: only {len(inspector.results)} inspections"
        for item in inspector.results:
            assert item["decision"] in {"OK", "KO", "NO_DECISION"}, item
            failed = [c for c in item["cameras"] if c["error_code"] is not None]
            assert not failed, f"{name}: an inspection failed during the swap: {failed}"
        versions = [c["model_version"] for c in inspector.results[-1]["cameras"] if c["camera_id"] == "top"]
        assert versions == ["2"], f"{name}: the last inspection used duck-detector {versions}"
    for device in fleet.devices:
        models = {m["name"]: m for m in system(fleet, device)["models"]}
        assert models["duck-detector"]["latest_version"] == 2


MODEL_ARGS = (
    "-e",
    "edge_model_name=duck-detector",
    "-e",
    "edge_model_version=2",
    "-e",
    f"edge_model_src={REPO / 'models' / 'duck-detector' / '1'}",
)


def test_a_second_update_models_changes_nothing(fleet: Fleet, deployed: PlaybookRun) -> None:
    run = timed("update_models_again_s", fleet.playbook("update_models.yml", *MODEL_ARGS))
    assert_ok(run, names(fleet))
    assert run.changed() == dict.fromkeys(names(fleet), 0), run.output[-4000:]


def test_rollback_goes_back_to_the_previous_release_once(fleet: Fleet, deployed: PlaybookRun) -> None:
    # Given the last device upgraded to a good next release (which keeps duck-detector 2)
    last = fleet.devices[-1]
    upgraded = fleet.work / "artifacts-next"
    build_artifacts(upgraded, release_copy(fleet.work, NEXT_VERSION, broken=False), wheelhouse=False)
    extra = json.dumps({"edge_version": NEXT_VERSION, "edge_dist_dir": str(upgraded / "dist")})
    upgrade = timed("upgrade_one_s", fleet.playbook("deploy_edge.yml", "-l", last.name, "-e", extra))
    assert_ok(upgrade, [last.name])
    assert system(fleet, last)["version"] == NEXT_VERSION
    assert {m["name"]: m["latest_version"] for m in system(fleet, last)["models"]}["duck-detector"] == 2
    # When the fleet is rolled back from the hub (its API, ansible-runner), followed live over SSE
    with run_hub(fleet.work / "hub", **fleet.hub_env()) as (hub, _):
        started = time.monotonic()
        answer = httpx.post(
            f"{hub}/api/v1/rollouts",
            json={"playbook": "rollback", "target": "edge"},
            headers=HUB_ADMIN,
            timeout=60,
        )
        assert answer.status_code == 202, answer.text
        rollout = answer.json()
        assert [(h["host"], h["status"]) for h in rollout["hosts"]] == [(n, "pending") for n in names(fleet)]
        events = follow_rollout(hub, rollout["id"])
        DURATIONS["rollback_s"] = time.monotonic() - started
        done = httpx.get(f"{hub}/api/v1/rollouts/{rollout['id']}", headers=HUB_ADMIN, timeout=10).json()
    # Then each device's progress arrived while the roll-out ran, before its end
    assert events[-1]["event"] == "rollout_finished", events[-3:]
    for device in fleet.devices:
        live = [e for e in events if e["host"] == device.name and e["event"] == "runner_on_ok"]
        assert live, f"no progress of {device.name}: {[e['event'] for e in events][:20]}"
        assert live[0]["rollout_status"] == "running", live[0]
    assert events[-1]["received"] - min(e["received"] for e in events if e["host"]) > 1.0, (
        "all at once, at the end"
    )
    # and the roll-out succeeded: that device changed; the others had nothing to roll back
    assert done["status"] == "successful" and done["rc"] == 0, done
    hosts = {h["host"]: h for h in done["hosts"]}
    assert sorted(hosts) == names(fleet)
    assert hosts[last.name]["status"] == "changed" and hosts[last.name]["changed"] > 0, hosts
    for device in fleet.devices[:-1]:
        assert hosts[device.name]["status"] == "ok" and hosts[device.name]["changed"] == 0, hosts
    assert all(h["failed"] == 0 for h in hosts.values()), hosts
    # and the device really is back on the previous release
    assert system(fleet, last)["version"] == GOOD_VERSION
    assert link(fleet, last, "current") == f"/opt/edge/releases/{GOOD_VERSION}"
    assert inspect(fleet, last)["decision"] is not None
    # and a second rollback changes nothing (no ping-pong between two releases)
    again = timed("rollback_again_s", fleet.playbook("rollback.yml"))
    assert_ok(again, names(fleet))
    assert again.changed() == dict.fromkeys(names(fleet), 0), again.output[-4000:]


def follow_rollout(hub: str, rollout_id: int, timeout: float = 600) -> list[dict[str, Any]]:
    """The roll-out's SSE stream read to its end; each event gets `received` (monotonic clock)."""
    events: list[dict[str, Any]] = []
    url = f"{hub}/api/v1/rollouts/{rollout_id}/events"
    with httpx.stream("GET", url, headers=HUB_ADMIN, timeout=httpx.Timeout(10, read=timeout)) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append({**json.loads(line[5:]), "received": time.monotonic()})
    return events


def test_facts_reports_every_device(fleet: Fleet, deployed: PlaybookRun) -> None:
    report_path = fleet.work / "facts.json"
    run = timed("facts_s", fleet.playbook("facts.yml", "-e", f"edge_facts_report={report_path}"))
    assert_ok(run, [*names(fleet), "localhost"])
    report = json.loads(report_path.read_text())["devices"]
    assert sorted(report) == names(fleet)
    for name, device in report.items():
        assert device["reachable"] and device["healthy"], (name, device)
        assert device["version"] == GOOD_VERSION and device["current_release"] == GOOD_VERSION
        assert device["health"] == {"model-serving": 200, "orchestrator": 200, "interface": 200}
        assert device["models"] == {"duck-detector": 2, "duck-classifier": 1}
    assert "fleet report written to" in run.output
    again = timed("facts_again_s", fleet.playbook("facts.yml", "-e", f"edge_facts_report={report_path}"))
    assert_ok(again, [*names(fleet), "localhost"])
    assert all(n == 0 for n in again.changed().values()), again.output[-4000:]
