"""`python -m edge_interface --port 8080`: run the line dashboard."""

from __future__ import annotations

import argparse
import logging
import socket

import uvicorn
from fastapi import FastAPI

from edge_interface.app import create_app, end_streams
from edge_interface.settings import InterfaceSettings


class _Server(uvicorn.Server):
    """uvicorn, ending the live pages' event streams as soon as it starts to stop.

    An open live page holds a stream that never ends by itself: without this, stopping waits for the grace
    period, then cancels the stream mid-response (a CancelledError in the log)."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        end_streams(self._app)
        await super().shutdown(sockets)


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
    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        # Streams end at once on stop (see _Server); this only bounds a request that is slow to finish.
        timeout_graceful_shutdown=2,
    )
    _Server(config, app).run()


if __name__ == "__main__":
    main()
