"""Starts and stops what the integrations file asks for (and the hub link), and gives the PLC handshakes the
orchestrator."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Protocol

from edge_orchestrator.domain import Inspection, TriggerRequest
from edge_orchestrator.events import EventBus
from edge_orchestrator.hub_link import HubLink
from edge_orchestrator.inspector import Inspector
from edge_orchestrator.integrations import mqtt, webhooks
from edge_orchestrator.integrations.config import IntegrationsConfig
from edge_orchestrator.integrations.handshake import Handshake
from edge_orchestrator.integrations.status import LinkStatus
from edge_orchestrator.outbox import Outbox
from edge_orchestrator.station import StationRepository

log = logging.getLogger(__name__)


class Link(Protocol):
    """A running integration (a protocol server or client)."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class OrchestratorLine:
    """The orchestrator as a handshake sees it: submit, wait for the decision, switch station."""

    def __init__(self, inspector: Inspector, stations: StationRepository) -> None:
        self._inspector = inspector
        self._stations = stations

    @property
    def station_id(self) -> str | None:
        station = self._inspector.station
        return station.id if station is not None else None

    async def submit(self, trigger: TriggerRequest, source: str) -> Inspection:
        return await self._inspector.submit(trigger, source)

    async def submit_once(self, trigger: TriggerRequest, source: str, key: str) -> tuple[Inspection, bool]:
        return await self._inspector.submit_once(trigger, source, key)

    async def decided(self, item_id: str) -> Inspection:
        """Every accepted item is decided (fail safe), so this returns unless the device stops."""
        while True:
            item = await self._inspector.wait(item_id, 60.0)
            if item is not None:
                return item

    async def switch(self, station_id: str) -> None:
        station = await asyncio.to_thread(self._stations.get, station_id)
        await self._inspector.activate(station)
        await asyncio.to_thread(self._stations.set_active_id, station.id)


def channels(config: IntegrationsConfig) -> list[str]:
    """The outbox channels this configuration delivers to (a decided item gets one message in each)."""
    return ([mqtt.CHANNEL] if config.mqtt is not None else []) + [w.channel for w in config.webhooks]


class Integrations:
    def __init__(
        self,
        config: IntegrationsConfig,
        base_dir: Path,
        line: OrchestratorLine,
        events: EventBus,
        outbox: Outbox,
        device_id: str,
        hub: HubLink | None = None,
    ) -> None:
        self._config = config
        self._hub = hub
        self._base_dir = base_dir
        self._line = line
        self._events = events
        self._outbox = outbox
        self._device_id = device_id
        self._handshakes: dict[str, Handshake] = {}
        self._clients: list[mqtt.MqttLink | webhooks.WebhookLink] = []
        self._links: list[Link] = []
        self._watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Everything the file asks for, or an IntegrationError (and whatever started is stopped again)."""
        try:
            await self._start()
        except BaseException:
            await self.stop()
            raise

    async def _start(self) -> None:
        config = self._config
        for webhook in config.webhooks:
            self._clients.append(webhooks.WebhookLink(webhook, self._base_dir, self._outbox))
        if config.mqtt is not None:
            mqtt.check_settings(config.mqtt, self._base_dir)
            self._clients.append(
                mqtt.MqttLink(
                    config.mqtt,
                    self._base_dir,
                    self._outbox,
                    self._line,
                    self._events,
                    self._device_id,
                    dict(config.recipes),
                )
            )
        for client in self._clients:
            await self._add(client)
        if self._hub is not None:
            await self._add(self._hub)
        for settings, source in ((config.opcua, "opcua"), (config.modbus, "modbus")):
            if settings is None:
                continue
            handshake = Handshake(
                source,
                self._line,
                recipes=config.recipes,
                defect_codes=config.defect_codes,
                heartbeat_s=config.heartbeat_s,
            )
            self._handshakes[source] = handshake
            await self._add(settings.build(handshake, self._base_dir))
        self._watcher = asyncio.create_task(self._follow_station(), name="integrations-station")

    async def _add(self, link: Link) -> None:
        await link.start()
        self._links.append(link)
        log.info("integration %s started", link.name)

    async def _follow_station(self) -> None:
        async for event in self._events.subscribe():
            if event.type == "station.activated":
                for handshake in self._handshakes.values():
                    await handshake.refresh()

    async def stop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        for link in reversed(self._links):
            try:
                await link.stop()
            except Exception:
                log.exception("stopping %s failed", link.name)
        self._links.clear()
        self._handshakes.clear()
        self._clients.clear()

    def status(self) -> list[LinkStatus]:
        """Each integration's state, for /api/v1/system, /metrics and the dashboard."""
        found: list[LinkStatus] = []
        for name, handshake in self._handshakes.items():
            s = handshake.signals
            state = (
                "busy"
                if s.busy
                else "result held, waiting for ResultAck"
                if s.result_ready
                else "ready"
                if s.ready
                else "not ready"
            )
            detail = f"last refusal: ErrorCode {s.error_code}" if s.error_code else None
            found.append(LinkStatus(name=name, up=True, state=state, detail=detail, results=s.results))
        for client in self._clients:
            state = "connected" if isinstance(client, mqtt.MqttLink) else "delivering"
            if not client.up:
                state = "disconnected" if isinstance(client, mqtt.MqttLink) else "retrying"
            found.append(LinkStatus(name=client.name, up=client.up, state=state, detail=client.problem))
        if self._hub is not None:
            found.append(self._hub.status())
        return found
