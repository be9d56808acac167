"""The model server's own exceptions; the API layer maps each to an HTTP status in one place."""

from __future__ import annotations


class ServingError(Exception):
    """Base class: every error carries a stable snake_case code and a human sentence."""

    code = "serving_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidImageError(ServingError):
    code = "invalid_image"


class ModelNotFoundError(ServingError):
    code = "model_not_found"


class VersionNotFoundError(ServingError):
    code = "version_not_found"


class ModelNotReadyError(ServingError):
    """The model (or version) exists but is loading or failed to load."""

    code = "model_not_ready"


class InvalidTensorError(ServingError):
    """An OIP request tensor whose name, shape, datatype or data do not fit the model."""

    code = "invalid_tensor"


class ManifestError(ServingError):
    """A model folder whose manifest is invalid or contradicts the model file."""

    code = "invalid_manifest"


class BodyTooLargeError(ServingError):
    code = "body_too_large"


class UnsupportedMediaTypeError(ServingError):
    code = "unsupported_media_type"


class OverloadedError(ServingError):
    code = "overloaded"
