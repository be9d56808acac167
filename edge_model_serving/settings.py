"""Where the model server finds its models and how hard it may work (env vars prefixed EDGE_SERVING_)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class ServingSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGE_SERVING_", frozen=True)

    models_dir: Path = Field(
        default=Path("models"), description="Folder of model folders (<name>/<version>/)."
    )
    host: str = Field(default="127.0.0.1", description="Interface to bind; 0.0.0.0 inside a container.")
    port: int = Field(default=8501, ge=1, le=65535)
    num_threads: int | None = Field(
        default=None,
        ge=1,
        description="LiteRT threads per interpreter; default: the CPU count divided by pool_size, so that "
        "concurrent requests never oversubscribe the cores (XNNPACK's threads spin while they wait).",
    )
    pool_size: int = Field(
        default=2, ge=1, le=16, description="Interpreters (each with its own thread) per model version."
    )
    max_body_bytes: int = Field(
        default=20 * 1024 * 1024, ge=1024, description="Largest accepted request body."
    )
    max_pending: int = Field(
        default=64, ge=1, description="Requests in flight beyond which new ones get 503 overloaded."
    )
    watch_interval_s: float = Field(
        default=2.0, ge=0.0, description="How often to look for new or changed model versions; 0 disables."
    )
    log_level: str = Field(default="info", description="debug, info, warning or error.")

    @property
    def interpreter_threads(self) -> int:
        return self.num_threads or max(1, _cpu_count() // self.pool_size)
