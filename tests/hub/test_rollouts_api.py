"""Roll-outs from the hub's API against a tiny local inventory (ansible_connection: local) and stand-in playbooks:
validation, one roll-out at a time, cancel, the SSE stream's order, and recovery after the hub died mid-run."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.hub.conftest import ADMIN, HubFactory, run_hub

pytestmark = pytest.mark.timeout(180)

# Stand-ins for hub/ansible's playbooks: same names, same `hosts:` and extra vars, local and quick. A release named
# "slow" takes 60 s (to be canceled); "broken" fails on h2.
PLAYBOOKS = {
    "deploy_edge.yml": [
        {
            "name": "Deploy",
            "hosts": "{{ edge_target | default('edge') }}",
            "gather_facts": False,
            "tasks": [
                {"name": "Say which release", "ansible.builtin.debug": {"msg": "release {{ edge_version }}"}},
                {
                    "name": "Install the release",
                    "ansible.builtin.command": "sleep {{ 60 if edge_version == 'slow' else 0 }}",
                },
                {
                    "name": "Check the release",
                    "ansible.builtin.fail": {"msg": "release {{ edge_version }} does not start"},
                    "when": "edge_version == 'broken' and inventory_hostname == 'h2'",
                },
            ],
        }
    ],
    "update_models.yml": [
        {
            "name": "Ship a model",
            "hosts": "{{ edge_target | default('edge') }}",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Ship it",
                    "ansible.builtin.debug": {"msg": "{{ edge_model_name }} {{ edge_model_version }}"},
                }
            ],
        }
    ],
    "rollback.yml": [
        {
            "name": "Roll back",
            "hosts": "{{ edge_target | default('edge') }}",
            "gather_facts": False,
            "tasks": [{"name": "Go back", "ansible.builtin.debug": {"msg": "back"}}],
        }
    ],
    "facts.yml": [
        {
            "name": "Collect",
            "hosts": "{{ edge_target | default('edge') }}",
            "gather_facts": False,
            "tasks": [{"name": "Collect versions", "ansible.builtin.set_fact": {"edge_device_report": "up"}}],
        },
        {
            "name": "Write the fleet report",
            "hosts": "localhost",
            "gather_facts": False,
            "tasks": [
                {
                    "name": "Write the report",
                    "ansible.builtin.copy": {
                        "content": "{{ {'devices': edge_facts_hosts} | to_json }}",
                        "dest": "{{ edge_facts_report }}",
                        "mode": "0644",
                    },
                }
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def ansible_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A playbook folder and an inventory: edge = line_a (h1, h2) + line_b (h3); `misc` (not edge) = other."""
    root = tmp_path_factory.mktemp("ansible")
    playbooks = root / "playbooks"
    playbooks.mkdir()
    for name, plays in PLAYBOOKS.items():
        (playbooks / name).write_text(yaml.safe_dump(plays, sort_keys=False))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable}
    hosts = {
        "all": {
            "children": {
                "edge": {
                    "children": {
                        "line_a": {"hosts": {"h1": local, "h2": local}},
                        "line_b": {"hosts": {"h3": local}},
                    }
                },
                "misc": {"hosts": {"other": local}},
            }
        }
    }
    inventory = root / "hosts.yml"
    inventory.write_text(yaml.safe_dump(hosts))
    return playbooks, inventory


def hub_env(ansible_setup: tuple[Path, Path]) -> dict[str, Any]:
    playbooks, inventory = ansible_setup
    extra = {
        "ANSIBLE_LOCAL_TEMP": str(inventory.parent / "tmp"),
        "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
    }
    return {
        "HUB_ANSIBLE_DIR": str(playbooks),
        "HUB_INVENTORY": str(inventory),
        "HUB_ANSIBLE_EXTRA_ENV": json.dumps(extra),
    }


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, ansible_setup: tuple[Path, Path]) -> Iterator[str]:
    """One real hub process for the module's roll-outs (they run one after the other anyway)."""
    with run_hub(tmp_path_factory.mktemp("hub"), **hub_env(ansible_setup)) as (base, _):
        yield base


def start(base: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{base}/api/v1/rollouts", json=body, headers=ADMIN, timeout=30)


def follow(base: str, rollout_id: int, after: int = 0, timeout: float = 90) -> list[dict[str, Any]]:
    """Read the SSE stream to its end; each event gets `received` (monotonic) and the roll-out's status then."""
    events: list[dict[str, Any]] = []
    url = f"{base}/api/v1/rollouts/{rollout_id}/events"
    with httpx.stream("GET", url, params={"after": after}, headers=ADMIN, timeout=timeout) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data:"):
                events.append({**json.loads(line[5:]), "received": time.monotonic()})
    return events


def get(base: str, rollout_id: int) -> dict[str, Any]:
    answer = httpx.get(f"{base}/api/v1/rollouts/{rollout_id}", headers=ADMIN, timeout=10)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def statuses(rollout: dict[str, Any]) -> dict[str, str]:
    return {h["host"]: h["status"] for h in rollout["hosts"]}


def test_bad_requests_are_refused_with_their_code(
    make_hub: HubFactory, ansible_setup: tuple[Path, Path], tmp_path: Path
) -> None:
    # Given a hub without an inventory
    bare = make_hub(data_dir=tmp_path / "bare")
    answer = bare.post("/api/v1/rollouts", json={"playbook": "facts", "target": "edge"}, headers=ADMIN)
    assert answer.status_code == 503 and answer.json()["code"] == "no_inventory", answer.text
    # Given a hub with one
    playbooks, inventory = ansible_setup
    client = make_hub(data_dir=tmp_path / "hub", ansible_dir=playbooks, inventory=inventory)
    bad_bodies = [
        {"playbook": "deploy_edge", "target": "edge"},  # no version
        {"playbook": "update_models", "target": "edge"},  # no model
        {"playbook": "update_models", "target": "edge", "model": {"name": "duck-detector", "version": "two"}},
        {"playbook": "facts", "target": "edge", "version": "0.2.0"},  # facts takes no version
        {"playbook": "format_disks", "target": "edge"},
        {"playbook": "facts", "target": "@/etc/passwd"},  # a file of hosts on the hub
        {"playbook": "facts", "target": "--help"},
        {"playbook": "facts"},
    ]
    for body in bad_bodies:
        answer = client.post("/api/v1/rollouts", json=body, headers=ADMIN)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.json()["code"] == "validation_error", answer.text
    for target in ("nowhere", "line_a,nowhere", "misc"):  # `misc` exists but is not an edge group
        answer = client.post("/api/v1/rollouts", json={"playbook": "facts", "target": target}, headers=ADMIN)
        assert answer.status_code == 422 and answer.json()["code"] == "unknown_target", (target, answer.text)
    # Only the admin starts and cancels; unknown roll-outs are 404
    assert client.post("/api/v1/rollouts", json={"playbook": "facts", "target": "edge"}).status_code == 401
    assert client.post("/api/v1/rollouts/1/cancel").status_code == 401
    assert client.get("/api/v1/rollouts/999", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/rollouts/999/events", headers=ADMIN).status_code == 404
    assert client.get("/api/v1/rollouts", headers=ADMIN).json() == {"rollouts": []}


def test_a_roll_out_streams_each_host_then_its_end(hub: str) -> None:
    # When facts runs on line_a
    answer = start(hub, playbook="facts", target="line_a")
    # Then it is accepted with the target's hosts, pending
    assert answer.status_code == 202, answer.text
    rollout = answer.json()
    assert rollout["status"] in {"pending", "running"} and rollout["playbook"] == "facts"
    assert [(h["host"], h["status"]) for h in rollout["hosts"]] == [("h1", "pending"), ("h2", "pending")]
    # and its stream shows each host's task, in order, and ends with the final event
    events = follow(hub, rollout["id"])
    names = [e["event"] for e in events]
    assert names[-1] == "rollout_finished" and names.count("rollout_finished") == 1
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    for host in ("h1", "h2"):
        oks = [e for e in events if e["host"] == host and e["event"] == "runner_on_ok"]
        assert [e["task"] for e in oks] == ["Collect versions"], names
        assert oks[0]["host_status"]["host"] == host
    assert names.index("playbook_on_stats") < names.index("rollout_finished")
    assert events[-1]["rollout_status"] == "successful"
    # and the roll-out ended successful, every host ok (the report play ran on the controller)
    done = get(hub, rollout["id"])
    assert done["status"] == "successful" and done["rc"] == 0 and done["detail"] is None, done
    assert statuses(done) == {"h1": "ok", "h2": "ok", "localhost": "changed"}
    assert all(h["failed"] == 0 and h["ok"] >= 1 for h in done["hosts"])
    assert done["started_at"] <= done["finished_at"]
    # and a follower that resumes after an event gets only the later ones
    middle = events[len(events) // 2]["id"]
    assert [e["id"] for e in follow(hub, rollout["id"], after=middle)] == [
        e["id"] for e in events if e["id"] > middle
    ]
    # and the list shows it, newest first
    listed = httpx.get(f"{hub}/api/v1/rollouts", headers=ADMIN, timeout=10).json()["rollouts"]
    assert listed[0]["id"] == rollout["id"]


def test_a_failing_host_fails_the_roll_out_with_a_sentence(hub: str) -> None:
    answer = start(hub, playbook="deploy_edge", target="edge", version="broken")
    assert answer.status_code == 202, answer.text
    events = follow(hub, answer.json()["id"])
    done = get(hub, answer.json()["id"])
    assert done["status"] == "failed" and done["rc"] not in (0, None), done
    assert done["version"] == "broken"
    assert "h2" in done["detail"] and "does not start" in done["detail"], done["detail"]
    assert statuses(done) == {"h1": "changed", "h2": "failed", "h3": "changed"}
    failed = [e for e in events if e["event"] == "runner_on_failed"]
    assert [e["host"] for e in failed] == ["h2"] and failed[0]["host_status"]["status"] == "failed"


def test_one_roll_out_at_a_time_and_cancel_stops_it(hub: str, ansible_setup: tuple[Path, Path]) -> None:
    # Given a slow deploy running
    first = start(hub, playbook="deploy_edge", target="edge", version="slow")
    assert first.status_code == 202, first.text
    rollout_id = first.json()["id"]
    deadline = time.monotonic() + 30
    while get(hub, rollout_id)["status"] != "running":
        assert time.monotonic() < deadline, "the roll-out never started running"
        time.sleep(0.1)
    # When another is asked for, it is refused
    second = start(
        hub, playbook="update_models", target="h1", model={"name": "duck-detector", "version": "2"}
    )
    assert second.status_code == 409 and second.json()["code"] == "rollout_running", second.text
    # When the first is canceled
    canceled_at = time.monotonic()
    answer = httpx.post(f"{hub}/api/v1/rollouts/{rollout_id}/cancel", headers=ADMIN, timeout=10)
    assert answer.status_code == 202, answer.text
    events = follow(hub, rollout_id)
    # Then it stops within seconds (not the 60 s of the task), canceled; interrupted hosts count as failed
    assert time.monotonic() - canceled_at < 20
    done = get(hub, rollout_id)
    assert done["status"] == "canceled" and done["detail"] == "Canceled from the hub.", done
    assert set(statuses(done).values()) <= {"failed", "skipped"}, done["hosts"]
    assert events[-1]["event"] == "rollout_finished" and events[-1]["rollout_status"] == "canceled"
    # and nothing of it is left running (ansible's workers included)
    assert wait_gone(str(ansible_setup[1])) == []
    # and canceling it again is a conflict, and the next roll-out can start
    again = httpx.post(f"{hub}/api/v1/rollouts/{rollout_id}/cancel", headers=ADMIN, timeout=10)
    assert again.status_code == 409 and again.json()["code"] == "rollout_not_running", again.text
    third = start(hub, playbook="update_models", target="h1", model={"name": "duck-detector", "version": "2"})
    assert third.status_code == 202, third.text
    follow(hub, third.json()["id"])
    shipped = get(hub, third.json()["id"])
    assert shipped["status"] == "successful" and shipped["models"] == [
        {"name": "duck-detector", "version": "2"}
    ]
    assert statuses(shipped) == {"h1": "ok"}


def ansible_processes(marker: str) -> list[int]:
    """Processes of ansible (the playbook, its workers, their commands) whose command line names `marker`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and ("ansible" in cmdline or "AnsiballZ" in cmdline):
            found.append(int(entry.name))
    return found


def wait_gone(marker: str, timeout: float = 15) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := ansible_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    return left


def test_a_roll_out_left_running_by_a_dead_hub_is_failed_at_the_next_start(
    tmp_path: Path, ansible_setup: tuple[Path, Path]
) -> None:
    data = tmp_path / "hub"
    env = hub_env(ansible_setup)
    inventory: str = env["HUB_INVENTORY"]
    try:
        # Given a hub killed (SIGKILL) while a roll-out runs: its ansible-playbook lives on
        with run_hub(data, **env) as (base, proc):
            rollout_id = start(base, playbook="deploy_edge", target="line_b", version="slow").json()["id"]
            deadline = time.monotonic() + 30
            while not any(e for e in _events_so_far(base, rollout_id) if e.get("host") == "h3"):
                assert time.monotonic() < deadline, "the roll-out never reached h3"
                time.sleep(0.2)
            proc.kill()
            proc.wait(timeout=10)
        assert ansible_processes(inventory), "the playbook should outlive a killed hub"
        # When the hub starts again on the same data
        with run_hub(data, **env) as (base, _):
            # Then the roll-out is failed, with why, its stream ends, and the orphaned playbook was stopped
            done = get(base, rollout_id)
            assert done["status"] == "failed" and done["detail"] == "The hub stopped during the roll-out.", (
                done
            )
            assert statuses(done) == {"h3": "failed"}
            events = follow(base, rollout_id, timeout=20)
            assert events[-1]["event"] == "rollout_finished" and events[-1]["rollout_status"] == "failed"
            assert wait_gone(inventory, timeout=5) == []
            # and a new roll-out can run
            again = start(base, playbook="rollback", target="h3")
            assert again.status_code == 202, again.text
            assert follow(base, again.json()["id"])[-1]["rollout_status"] == "successful"
    finally:
        for pid in ansible_processes(inventory):  # only if the test failed half-way
            os.kill(pid, signal.SIGKILL)


def _events_so_far(base: str, rollout_id: int) -> list[dict[str, Any]]:
    """The events stored so far, without waiting for the end: the stream is read for at most a second."""
    events: list[dict[str, Any]] = []
    url = f"{base}/api/v1/rollouts/{rollout_id}/events"
    try:
        with httpx.stream("GET", url, headers=ADMIN, timeout=httpx.Timeout(5, read=1)) as response:
            for line in response.iter_lines():
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
    except httpx.ReadTimeout:
        pass
    return events
