"""kill -9 in the middle of inspections: every accepted item is found again, decided or marked interrupted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from tests.conftest import AUTH, REPO, duck_station, install_station, run_orchestrator, serve


def test_kill_9_loses_no_accepted_inspection(tmp_path: Path) -> None:
    # Given a slow line (each camera delivers 4 frames a second), so inspections queue up
    install_station(tmp_path / "stations", duck_station(fps=4))
    data = tmp_path / "data"
    with serve(REPO / "models") as (model_url, _):
        with run_orchestrator(data, tmp_path / "stations", model_url, default_station="duck-line") as (
            base,
            proc,
        ):
            accepted = []
            for i in range(12):
                response = httpx.post(f"{base}/api/v1/inspections", json={"part_id": f"p{i}"}, headers=AUTH)
                assert response.status_code == 202
                accepted.append(response.json()["item_id"])
            time.sleep(0.6)
            # When the orchestrator is killed without any chance to clean up
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

        # Then after a restart every accepted item is there: decided before the kill, or interrupted
        with run_orchestrator(data, tmp_path / "stations", model_url, default_station="duck-line") as (
            base,
            _,
        ):
            items = [httpx.get(f"{base}/api/v1/inspections/{i}", headers=AUTH).json() for i in accepted]
            states = [item["state"] for item in items]
            assert set(states) <= {"done", "interrupted"}, states
            assert "interrupted" in states and "done" in states, states
            for index, item in enumerate(items):
                assert item["part_id"] == f"p{index}"  # never re-attributed
                if item["state"] == "interrupted":
                    # never re-captured as if nothing happened: the part has moved on
                    assert item["decision"] == "NO_DECISION" and item["cameras"] == []
                    assert any("interrupted" in reason for reason in item["reasons"])
                else:
                    assert item["decision"] in ("OK", "KO") and len(item["cameras"]) == 2
            listed = httpx.get(
                f"{base}/api/v1/inspections", params={"state": "interrupted", "limit": 100}, headers=AUTH
            ).json()
            assert {i["item_id"] for i in listed["items"]} == {
                i["item_id"] for i in items if i["state"] == "interrupted"
            }
            stats = httpx.get(f"{base}/api/v1/stats", headers=AUTH).json()
            assert stats["interrupted"] == states.count("interrupted")
            # and the line goes on
            after = httpx.post(f"{base}/api/v1/inspections?wait=10", headers=AUTH, timeout=20)
            assert after.status_code == 200 and after.json()["decision"] in ("OK", "KO")
            assert "edge_inspections_interrupted_total " in httpx.get(f"{base}/metrics").text
