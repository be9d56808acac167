"""`python -m edge_model_serving --models-dir DIR --port 8501`: run the model server."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn

from edge_model_serving.api import create_app
from edge_model_serving.runtime import tune_allocator
from edge_model_serving.settings import ServingSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge_model_serving", description=__doc__)
    parser.add_argument("--models-dir", type=Path, help="folder of models (env EDGE_SERVING_MODELS_DIR)")
    parser.add_argument("--host", help="interface to bind (env EDGE_SERVING_HOST)")
    parser.add_argument("--port", type=int, help="port (env EDGE_SERVING_PORT, default 8501)")
    parser.add_argument("--num-threads", type=int, help="LiteRT threads per interpreter")
    parser.add_argument("--pool-size", type=int, help="interpreters per model version")
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = ServingSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if not settings.models_dir.is_dir():
        parser.error(f"models directory {settings.models_dir} does not exist")
    tune_allocator()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
    )


if __name__ == "__main__":
    main()
