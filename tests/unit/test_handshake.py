"""The PLC handshake state machine, protocol aside: what the PLC sees after each thing it does."""

from __future__ import annotations

import asyncio

import pytest

from edge_orchestrator.domain import CameraResult, Decision, Inspection
from edge_orchestrator.errors import QueueFullError, StationNotFoundError, StorageError
from edge_orchestrator.integrations.handshake import DefectCode, ErrorCode, Handshake, Signals
from tests.fakes import FakeLine, classification, detection

pytestmark = pytest.mark.anyio


class Plc:
    """Records every set of signals the adapter would have written, in order."""

    def __init__(self) -> None:
        self.seen: list[Signals] = []

    async def show(self, signals: Signals) -> None:
        self.seen.append(signals)

    @property
    def now(self) -> Signals:
        return self.seen[-1]


async def started(line: FakeLine) -> tuple[Handshake, Plc]:
    handshake = Handshake(
        "test",
        line,
        recipes={1: "duck-line", 2: "duck-line-b"},
        defect_codes={"missing_eye": 11, "stain": 12},
        heartbeat_s=0,
    )
    plc = Plc()
    handshake.watch(plc.show)
    await handshake.start()
    return handshake, plc


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_full_cycle_ready_busy_result_ack_ready() -> None:
    # Given a ready device
    line = FakeLine()
    handshake, plc = await started(line)
    assert plc.now.ready and not plc.now.busy and plc.now.recipe_index == 1
    # When the PLC triggers part P1
    await handshake.trigger("P1")
    # Then it is busy, not ready, and exactly one item was submitted with the part id
    assert plc.now.busy and not plc.now.ready and not plc.now.result_ready
    assert [i.part_id for i in line.submitted] == ["P1"]
    # When the item is decided KO
    line.decide(line.submitted[0].item_id, Decision.KO)
    await settle()
    # Then the result is held with its bits, and busy drops in the same update
    s = plc.now
    assert s.result_ready and s.result_ko and not s.result_ok and not s.result_no_decision
    assert not s.busy and not s.ready
    assert s.item_id == line.submitted[0].item_id and s.part_id == "P1" and s.results == 1
    assert s.defect_code == DefectCode.KO
    # When the PLC acknowledges
    await handshake.acknowledge()
    # Then the result is cleared and the device is ready again
    s = plc.now
    assert s.ready and not s.result_ready and not s.result_ko and s.defect_code == 0


async def test_result_bits_are_never_shown_without_their_flag_in_a_later_update() -> None:
    # Given a decided item, every update the PLC could have read
    line = FakeLine(auto=Decision.OK)
    handshake, plc = await started(line)
    await handshake.trigger(None)
    await settle()
    # Then no update shows ResultReady with stale result bits: ResultReady implies exactly one result bit
    for s in plc.seen:
        if s.result_ready:
            assert [s.result_ok, s.result_ko, s.result_no_decision].count(True) == 1


async def test_trigger_while_busy_is_refused_and_never_queued() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    await handshake.trigger("P1")
    # When the PLC triggers again while the first part runs
    await handshake.trigger("P2")
    # Then ErrorCode says busy, still one item, and the first result still arrives
    assert plc.now.error_code == ErrorCode.BUSY and len(line.submitted) == 1
    line.decide(line.submitted[0].item_id, Decision.OK)
    await settle()
    assert plc.now.result_ok and plc.now.part_id == "P1"


async def test_trigger_before_ack_is_refused_and_the_result_held() -> None:
    line = FakeLine(auto=Decision.KO)
    handshake, plc = await started(line)
    await handshake.trigger("P1")
    await settle()
    held = plc.now
    # When the PLC triggers without acknowledging
    await handshake.trigger("P2")
    # Then refused, and the held result is unchanged
    assert plc.now.error_code == ErrorCode.RESULT_NOT_ACKNOWLEDGED
    assert (plc.now.result_ko, plc.now.item_id, plc.now.part_id) == (held.result_ko, held.item_id, "P1")
    assert len(line.submitted) == 1
    # And the next accepted trigger clears the error code
    await handshake.acknowledge()
    await handshake.trigger("P2")
    assert plc.now.error_code == ErrorCode.NONE and len(line.submitted) == 2


async def test_refused_by_the_orchestrator_sets_the_error_and_stays_ready() -> None:
    line = FakeLine()
    line.refuse = QueueFullError("full")
    handshake, plc = await started(line)
    await handshake.trigger("P1")
    assert plc.now.error_code == ErrorCode.QUEUE_FULL and plc.now.ready and not plc.now.busy


async def test_no_station_means_not_ready_and_triggers_refused() -> None:
    line = FakeLine(station_id=None)
    handshake, plc = await started(line)
    assert not plc.now.ready
    await handshake.trigger("P1")
    assert plc.now.error_code == ErrorCode.NOT_READY and line.submitted == []


async def test_part_id_too_long_is_refused() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    await handshake.trigger("x" * 129)
    assert plc.now.error_code == ErrorCode.INVALID_PART_ID and line.submitted == []


async def test_recipe_switch_between_parts() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    # When the PLC selects recipe 2
    await handshake.select_recipe(2)
    # Then its station is activated, RecipeIndex shows it and the device is ready
    assert line.switches == ["duck-line-b"] and plc.now.recipe_index == 2 and plc.now.ready
    # Not-ready was shown during the switch
    assert any(not s.ready for s in plc.seen[-3:])


async def test_recipe_refusals_write_back_the_active_recipe() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    await handshake.select_recipe(7)
    assert plc.now.error_code == ErrorCode.UNKNOWN_RECIPE and plc.now.recipe_index == 1
    await handshake.trigger("P1")
    await handshake.select_recipe(2)
    assert plc.now.error_code == ErrorCode.RECIPE_WHILE_BUSY and line.switches == []
    line.decide(line.submitted[0].item_id, Decision.OK)
    await settle()
    await handshake.acknowledge()
    line.fail_switch = StationNotFoundError("gone")
    await handshake.select_recipe(2)
    assert plc.now.error_code == ErrorCode.RECIPE_FAILED and plc.now.recipe_index == 1 and plc.now.ready


async def test_defect_code_from_the_first_listed_label_of_a_ko_camera() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    await handshake.trigger("P1")
    cameras = [
        CameraResult(
            camera_id="top", decision=Decision.KO, prediction=detection(("stain", 0.9), ("missing_eye", 0.8))
        ),
        CameraResult(camera_id="side", decision=Decision.OK, prediction=classification("ok", 0.9)),
    ]
    line.decide(line.submitted[0].item_id, Decision.KO, cameras)
    await settle()
    assert plc.now.defect_code == 11  # missing_eye is listed first
    await handshake.acknowledge()
    await handshake.trigger("P2")
    line.decide(line.submitted[1].item_id, Decision.NO_DECISION)
    await settle()
    assert plc.now.result_no_decision and plc.now.defect_code == DefectCode.NO_DECISION


async def test_station_changed_elsewhere_updates_recipe_index() -> None:
    line = FakeLine()
    handshake, plc = await started(line)
    line.station_id = "duck-line-b"
    await handshake.refresh()
    assert plc.now.recipe_index == 2


async def test_heartbeat_counts_and_stop_drops_ready() -> None:
    line = FakeLine()
    handshake = Handshake("test", line, recipes={}, defect_codes={}, heartbeat_s=0.01)
    plc = Plc()
    handshake.watch(plc.show)
    await handshake.start()
    await asyncio.sleep(0.1)
    assert plc.now.heartbeat >= 3
    await handshake.stop()
    assert not plc.now.ready


async def test_a_result_that_cannot_be_read_is_no_decision_never_a_stuck_busy() -> None:
    class BrokenLine(FakeLine):
        async def decided(self, item_id: str) -> Inspection:
            raise StorageError("disk gone")

    line = BrokenLine()
    handshake, plc = await started(line)
    await handshake.trigger("P1")
    await settle()
    assert plc.now.result_ready and plc.now.result_no_decision and not plc.now.busy
    assert plc.now.error_code == ErrorCode.INTERNAL and plc.now.defect_code == DefectCode.NO_DECISION
