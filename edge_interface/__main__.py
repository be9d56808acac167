"""`python -m edge_interface --port 8080`: run the line dashboard."""

from __future__ import annotations

import argparse
import logging

import uvicorn

from edge_interface.app import create_app
from edge_interface.settings import InterfaceSettings


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge_interface", description=__doc__)
    parser.add_argument("--host", help="interface to bind (env EDGE_INTERFACE_HOST)")
    parser.add_argument("--port", type=int, help="port (env EDGE_INTERFACE_PORT, default 8080)")
    parser.add_argument(
        "--orchestrator-url", help="edge_orchestrator base URL (env EDGE_INTERFACE_ORCHESTRATOR_URL)"
    )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None}
    settings = InterfaceSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Open live pages hold event streams: do not wait for browsers to leave before stopping.
        timeout_graceful_shutdown=2,
    )


if __name__ == "__main__":
    main()
