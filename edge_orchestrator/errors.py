"""The orchestrator's own exceptions; the API layer maps each to an HTTP status in one place."""

from __future__ import annotations


class OrchestratorError(Exception):
    """Base class: every error carries a stable snake_case code and a human sentence."""

    code = "orchestrator_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class StationError(OrchestratorError):
    """A station file that cannot be read or does not validate."""

    code = "invalid_station"

    def __init__(self, detail: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class IntegrationError(OrchestratorError):
    """An integrations file (PLC, MQTT, webhooks) that cannot be read, does not validate, or cannot start."""

    code = "invalid_integrations"

    def __init__(self, detail: str, errors: list[dict[str, object]] | None = None) -> None:
        super().__init__(detail)
        self.errors = errors or []


class StationNotFoundError(OrchestratorError):
    code = "station_not_found"


class ItemNotFoundError(OrchestratorError):
    code = "item_not_found"


class InvalidItemIdError(OrchestratorError):
    code = "invalid_item_id"


class ImageNotFoundError(OrchestratorError):
    code = "image_not_found"


class QueueFullError(OrchestratorError):
    """Too many inspections in flight: the trigger is refused rather than queued without bound."""

    code = "queue_full"


class NotReadyError(OrchestratorError):
    """No active station, or the orchestrator is starting or stopping."""

    code = "not_ready"


class CameraError(OrchestratorError):
    """A camera could not deliver a frame (disconnected, unreadable, bad data)."""

    code = "camera_error"


class CameraTimeoutError(CameraError):
    code = "camera_timeout"


class ModelError(OrchestratorError):
    """The model server answered with an error, or its answer could not be understood."""

    code = "model_error"


class ModelTimeoutError(ModelError):
    code = "model_timeout"


class ModelUnavailableError(ModelError):
    """The model server could not be reached at all."""

    code = "model_unavailable"


class StorageError(OrchestratorError):
    """The database cannot be used (written by a newer version, not WAL-capable, ...)."""

    code = "storage_error"


class ConflictError(OrchestratorError):
    """The request contradicts the item's current state (HTTP 409)."""

    code = "conflict"


class NotDecidedError(ConflictError):
    code = "not_decided"


class IdempotencyConflictError(ConflictError):
    code = "idempotency_conflict"


class ItemStateError(ConflictError):
    code = "invalid_item_state"


class DuplicateItemError(ConflictError):
    code = "duplicate_item"


class InvalidCursorError(OrchestratorError):
    code = "invalid_cursor"


class InvalidVerdictError(OrchestratorError):
    code = "invalid_verdict"
