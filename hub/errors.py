"""The hub's own exceptions: each carries its HTTP status and a stable code, mapped to JSON in one place."""

from __future__ import annotations


class HubError(Exception):
    """Base class: a human sentence (`detail`), a stable snake_case `code` and the HTTP status it means.

    Core modules raise these (they never import FastAPI); hub/api/app.py turns any of them into
    `{"detail", "code"}` with `status`. Subclass and set `status` and `code`, or pass them per instance.
    """

    status = 400
    code = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class UnauthorizedError(HubError):
    status = 401
    code = "unauthorized"


class InvalidTokenError(HubError):
    status = 401
    code = "invalid_token"


class DeviceMismatchError(HubError):
    """A device token used to write another device's data."""

    status = 403
    code = "device_mismatch"


class NotFoundError(HubError):
    status = 404
    code = "not_found"


class ConflictError(HubError):
    status = 409
    code = "conflict"


class TooLargeError(HubError):
    status = 413
    code = "too_large"


class UnsupportedMediaTypeError(HubError):
    status = 415
    code = "unsupported_media_type"


class InvalidInputError(HubError):
    """Well-formed JSON whose content the hub cannot accept (an undecided item, a bad id...)."""

    status = 422
    code = "invalid_input"


class ConfigurationError(HubError):
    """The hub cannot start or serve as configured (unreadable key file, ...)."""

    status = 503
    code = "configuration_error"
