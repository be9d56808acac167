"""The device's link to the hub: heartbeats, and every result (with the images the sampling keeps) delivered in
batches from the outbox's "hub" channel. The hub stores each item once, whatever the device repeats.

Hub answers: 2xx delivered; network errors, 408/425/429/5xx retried with backoff; 401/403 (a token problem)
and any other unexpected status retried with a long backoff and shown on the link, never a reason to drop
data; 400/409/413/415/422 refuse the message (parked after max_attempts, kept and reported).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import httpx
from pydantic import SecretStr

from edge_orchestrator import __version__
from edge_orchestrator.domain import Decision, Inspection, utcnow
from edge_orchestrator.errors import ImageNotFoundError, IntegrationError, InvalidItemIdError
from edge_orchestrator.integrations.status import LinkStatus
from edge_orchestrator.outbox import Message, Outbox, RejectedError, TransientError, retry_after
from edge_orchestrator.retention import TS_FORMAT, timestamp, transaction
from edge_orchestrator.storage import Store
from edge_orchestrator.telemetry import (
    MAX_IMAGE_BYTES,
    MAX_RESULTS_PER_BATCH,
    Counts,
    DiskReport,
    HealthReport,
    Heartbeat,
    IngestReceipt,
    ModelRef,
    OutboxReport,
    ResultBatch,
    ResultUpload,
)

log = logging.getLogger(__name__)

CHANNEL = "hub"
# A refused token or an unknown route does not heal by itself: retry rarely, show it, keep every result.
SLOW_RETRY_S = 60.0
_RETRY = {408, 425, 429}
_REJECT = {400, 409, 413, 415, 422}
_COUNTED_KEY = "hub.counted_until"


@dataclass(frozen=True, slots=True)
class DeviceState:
    """What a heartbeat says about the device besides storage: station, models, health."""

    station_id: str | None
    station_revision: str | None
    models: list[ModelRef]
    health: HealthReport
    settled_until: datetime  # every item decided before this instant is stored (none is still in flight)


def sample_point(item_id: str) -> float:
    """A number in [0, 1) fixed by the item id: a redelivery (or another device) makes the same choice."""
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") / 2**64


def sends_images(item: Inspection, ok_share: float) -> bool:
    """KO, NO_DECISION and overridden items always send their images; OK ones a deterministic share."""
    if item.decision != Decision.OK or (item.verdict is not None and item.verdict.overrides):
        return True
    return sample_point(item.item_id) < ok_share


def read_token(token: SecretStr | None, token_file: Path | None) -> str:
    """The device token, from the setting or its file (blocking: call it off the event loop)."""
    if token is not None:
        value = token.get_secret_value().strip()
    elif token_file is not None:
        try:
            value = token_file.read_text().strip()
        except OSError as exc:
            raise IntegrationError(
                f"the hub token file {token_file} cannot be read ({exc.strerror})"
            ) from exc
    else:
        raise IntegrationError("the hub is configured without a token")
    if not value:
        raise IntegrationError("the hub token is empty")
    return value


def decision_counts(conn: sqlite3.Connection, since: datetime, until: datetime) -> Counts:
    """Decisions made in [since, until), by decision (reader thread; served by the items_decided index)."""
    rows = conn.execute(
        "SELECT decision, COUNT(*) FROM items WHERE decided_at >= ? AND decided_at < ? GROUP BY decision",
        (timestamp(since), timestamp(until)),
    ).fetchall()
    found = dict(rows)
    return Counts(
        ok=found.get(Decision.OK.value, 0),
        ko=found.get(Decision.KO.value, 0),
        no_decision=found.get(Decision.NO_DECISION.value, 0),
    )


def _counted_until(conn: sqlite3.Connection, first_start: datetime) -> datetime:
    """Where the next heartbeat's counts start: the last acknowledged beat, else the first start ever."""
    with transaction(conn):
        conn.execute(
            "INSERT INTO device_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO NOTHING",
            (_COUNTED_KEY, timestamp(first_start)),
        )
        (value,) = conn.execute("SELECT value FROM device_state WHERE key = ?", (_COUNTED_KEY,)).fetchone()
    return _parse_ts(value)


def _save_counted(conn: sqlite3.Connection, until: datetime) -> None:
    with transaction(conn):
        conn.execute("UPDATE device_state SET value = ? WHERE key = ?", (timestamp(until), _COUNTED_KEY))


def _parse_ts(value: str) -> datetime:
    return datetime.strptime(value, TS_FORMAT).replace(tzinfo=UTC)


class HubLink:
    """Heartbeats every `heartbeat_s`, and the "hub" channel's deliveries; its state is one integration link."""

    name = CHANNEL

    def __init__(
        self,
        url: str,
        token: str,
        *,
        device_id: str,
        store: Store,
        outbox: Outbox,
        state: Callable[[], Awaitable[DeviceState]],
        heartbeat_s: float = 30.0,
        ok_image_share: float = 0.05,
        timeout_s: float = 10.0,
        backoff_s: tuple[float, float] = (0.5, 30.0),
        max_attempts: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._device_id = device_id
        self._store = store
        self._outbox = outbox
        self._state = state
        self._heartbeat_s = heartbeat_s
        self._ok_share = ok_image_share
        self._backoff_s = backoff_s
        self._max_attempts = max_attempts
        # The token lives only in this client's default headers (httpx never logs them).
        self._client = httpx.AsyncClient(
            base_url=url.rstrip("/"),
            timeout=timeout_s,
            headers={"Authorization": f"Bearer {token}", "User-Agent": f"edge-orchestrator/{__version__}"},
            follow_redirects=False,
            transport=transport,
        )
        self._tasks: list[asyncio.Task[None]] = []
        self._since: datetime | None = None
        self._created = utcnow()  # where the counts start on the first start ever with a hub
        self._answered = False
        self._beat_problem: str | None = None
        self._send_problem: str | None = None

    async def start(self) -> None:
        self._since = await self._store.write(_counted_until, self._created)
        self._tasks = [
            asyncio.create_task(self._heartbeats(), name="hub-heartbeat"),
            asyncio.create_task(
                self._outbox.deliver_batches(
                    CHANNEL,
                    self._send,
                    max_attempts=self._max_attempts,
                    backoff_s=self._backoff_s,
                    batch=MAX_RESULTS_PER_BATCH,
                ),
                name="hub-results",
            ),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._client.aclose()

    def status(self) -> LinkStatus:
        problem = self._send_problem or self._beat_problem
        if problem is not None:
            return LinkStatus(name=CHANNEL, up=False, state="retrying", detail=problem)
        if not self._answered:
            return LinkStatus(name=CHANNEL, up=False, state="connecting")
        return LinkStatus(name=CHANNEL, up=True, state="connected")

    # --- heartbeats ----------------------------------------------------------------------------

    async def _heartbeats(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception:  # a bug or a storage hiccup must not end the heartbeats for good
                log.exception("hub: heartbeat failed")
            await asyncio.sleep(self._heartbeat_s)

    async def beat(self) -> bool:
        """Send one heartbeat; True when the hub took it (its counts are then never sent again)."""
        heartbeat = await self.heartbeat()
        try:
            await self._request(
                "POST",
                "/api/v1/ingest/heartbeat",
                content=heartbeat.model_dump_json(),
                headers={"Content-Type": "application/json"},
            )
        except (TransientError, RejectedError) as exc:
            if self._beat_problem != str(exc):
                log.warning("hub: heartbeat not taken: %s", exc)
            self._beat_problem = str(exc)
            return False
        await self._store.write(_save_counted, heartbeat.sent_at)
        self._since = heartbeat.sent_at
        self._answered = True
        if self._beat_problem is not None or self._send_problem is not None:
            log.info("hub: heartbeat taken again")
            self._outbox.retry_now(CHANNEL)  # the hub answers: deliver now rather than after the backoff
        self._beat_problem = None
        return True

    async def heartbeat(self) -> Heartbeat:
        """The device now, and its decisions since the last heartbeat the hub acknowledged."""
        if self._since is None:
            self._since = await self._store.write(_counted_until, self._created)
        since = self._since
        state = await self._state()
        sent_at = max(state.settled_until, since)
        counts = await self._store.read(decision_counts, since, sent_at)
        usage = await self._store.usage()
        depth = await self._outbox.depth()
        return Heartbeat(
            device_id=self._device_id,
            sent_at=sent_at,
            interval_s=self._heartbeat_s,
            version=__version__,
            station_id=state.station_id,
            station_revision=state.station_revision,
            models=state.models,
            health=state.health,
            disk=DiskReport(
                fs_free_bytes=usage.fs_free_bytes,
                fs_total_bytes=usage.fs_total_bytes,
                image_bytes=usage.image_bytes,
            ),
            since=since,
            counts=counts,
            outbox=[
                OutboxReport(
                    channel=d.channel,
                    pending=d.pending,
                    parked=d.parked,
                    dropped=d.dropped,
                    oldest_pending_at=_parse_ts(d.oldest_pending_at) if d.oldest_pending_at else None,
                )
                for d in depth
            ],
        )

    # --- results -------------------------------------------------------------------------------

    async def _send(self, messages: list[Message]) -> None:
        """Upload each result's sampled images, then the results in one request (the outbox's batch sender)."""
        try:
            uploads: list[ResultUpload] = []
            for index, message in enumerate(messages):
                try:
                    uploads.append(await self._prepare(message))
                except (TransientError, RejectedError) as exc:
                    if uploads:  # those before it go now: order is kept, and the failure is this one's
                        await self._post(uploads)
                    exc.acknowledged = index
                    raise
            await self._post(uploads)
        except (TransientError, RejectedError) as exc:
            self._send_problem = str(exc)
            raise
        self._send_problem = None
        self._answered = True

    async def _post(self, uploads: list[ResultUpload]) -> None:
        try:
            await self._post_once(uploads)
        except RejectedError:
            if len(uploads) == 1:
                raise
            # The hub refused the request as a whole: one at a time finds the one it refuses.
            for index, upload in enumerate(uploads):
                try:
                    await self._post_once([upload])
                except (TransientError, RejectedError) as exc:
                    exc.acknowledged = index
                    raise

    async def _post_once(self, uploads: list[ResultUpload]) -> None:
        response = await self._request(
            "POST",
            "/api/v1/ingest/results",
            content=ResultBatch(results=uploads).model_dump_json(),
            headers={"Content-Type": "application/json"},
        )
        with contextlib.suppress(ValueError):  # delivered whatever the body says: 2xx is the acknowledgement
            receipt = IngestReceipt.model_validate_json(response.content)
            if receipt.duplicates:
                log.info("hub: %d of %d results were already there", receipt.duplicates, len(uploads))

    async def _prepare(self, message: Message) -> ResultUpload:
        """The result as the hub takes it, after uploading the images the sampling keeps (and we still have)."""
        try:
            body = json.loads(message.body)
            item = Inspection.model_validate(body)
            event = body.get("event", "inspection.decided")
            images: list[str] = []
            upload = ResultUpload(event=event, device_id=self._device_id, seq=message.seq, item=item)
        except ValueError as exc:  # never ours unless the database was edited: park it, keep going
            raise RejectedError(f"the outbox message is not a result ({exc})") from exc
        if sends_images(item, self._ok_share):
            for camera in item.cameras:
                image = await self._image(item.item_id, camera.camera_id)
                if image is None:
                    continue
                data, media_type = image
                await self._request(
                    "PUT",
                    f"/api/v1/ingest/images/{item.item_id}/{quote(camera.camera_id, safe='')}",
                    content=data,
                    headers={"Content-Type": media_type},
                )
                images.append(camera.camera_id)
        return upload.model_copy(update={"images": images})

    async def _image(self, item_id: str, camera_id: str) -> tuple[bytes, str] | None:
        """The stored image and its media type; None when retention pruned it or it was never saved."""
        try:
            path = await self._store.image_file(item_id, camera_id)
            data = await asyncio.to_thread(path.read_bytes)
        except (ImageNotFoundError, InvalidItemIdError, OSError):
            return None
        if len(data) > MAX_IMAGE_BYTES:
            log.warning(
                "hub: image %s/%s is %d bytes, over the hub's limit: not sent", item_id, camera_id, len(data)
            )
            return None
        return data, "image/png" if data.startswith(b"\x89PNG") else "image/jpeg"

    async def _request(self, method: str, path: str, **kwargs: object) -> httpx.Response:
        """One call to the hub, its answer mapped to delivered, transient or rejected."""
        try:
            response = await self._client.request(method, path, **kwargs)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise TransientError(f"hub unreachable ({type(exc).__name__}: {exc})") from exc
        status = response.status_code
        if 200 <= status < 300:
            return response
        code, detail = _error(response)
        if status == 401:
            raise TransientError(f"hub refused the token ({status} {code})", SLOW_RETRY_S)
        if status == 403:
            raise TransientError(f"hub refused this device ({status} {code}): {detail}", SLOW_RETRY_S)
        if status in _REJECT:
            raise RejectedError(f"hub refused it ({status} {code}): {detail}")
        if status in _RETRY or status >= 500:
            raise TransientError(
                f"hub busy or failing ({status} {code})", retry_after(response.headers.get("Retry-After"))
            )
        # 404, 405...: a wrong hub URL or an older hub; fixed by people, so keep everything meanwhile.
        raise TransientError(f"hub answered {status} {code} to {method} {path}", SLOW_RETRY_S)


def _error(response: httpx.Response) -> tuple[str, str]:
    """The hub's {"detail", "code"}, or what can be said without it."""
    try:
        body = response.json()
        return str(body.get("code", "error")), str(body.get("detail", ""))[:200]
    except (ValueError, AttributeError):
        return "error", response.text[:200]
