"""`python -m hub` serves the hub (settings from HUB_* variables); `python -m hub register DEVICE` registers a
device against the database directly and prints (or writes) its token; `python -m hub migrate` migrates."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

import uvicorn
from sqlalchemy import make_url

from hub.api.app import create_app
from hub.db import Database
from hub.devices import DeviceSpec, register
from hub.errors import HubError
from hub.settings import HubSettings


def _migrate(settings: HubSettings) -> Database:
    db = Database(settings.url)
    db.migrate()
    return db


def _register(settings: HubSettings, args: argparse.Namespace) -> int:
    try:
        spec = DeviceSpec(device_id=args.device, site=args.site, line=args.line, description=args.description)
    except ValueError as exc:
        print(f"invalid device: {exc}", file=sys.stderr)
        return 2
    db = _migrate(settings)
    try:
        with db.transaction(write=True) as conn:
            registration = register(conn, spec)
    except HubError as exc:
        print(f"{exc.code}: {exc.detail}", file=sys.stderr)
        return 1
    finally:
        db.close()
    if args.token_file is None:
        print(registration.token)
        return 0
    path: Path = args.token_file
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created 0600 from the start: the token is never readable by others, not even for an instant.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(registration.token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT: make sure
    print(f"registered device {spec.device_id}; its token is in {path} (mode 0600)")
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hub", description=__doc__)
    parser.add_argument("--host", help="interface to bind (env HUB_HOST)")
    parser.add_argument("--port", type=int, help="port (env HUB_PORT, default 8100)")
    parser.add_argument("--data-dir", type=Path, help="database, images, key (env HUB_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", metavar="{serve,register,migrate}")
    commands.add_parser("serve", help="serve the hub (the default)")
    commands.add_parser("migrate", help="bring the database to the newest schema and exit")
    reg = commands.add_parser("register", help="register a device and print its token (shown once)")
    reg.add_argument("device", help="the device id (EDGE_ORCHESTRATOR_DEVICE_ID of the device)")
    reg.add_argument("--site")
    reg.add_argument("--line")
    reg.add_argument("--description")
    reg.add_argument("--token-file", type=Path, help="write the token to this file (mode 0600) instead")
    args = parser.parse_args(argv)

    overrides = {k: v for k, v in vars(args).items() if k in ("host", "port", "data_dir") and v is not None}
    settings = HubSettings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if args.command == "migrate":
        _migrate(settings).close()
        print(f"the database is at the newest schema ({make_url(settings.url).render_as_string()})")
        sys.exit(0)
    if args.command == "register":
        sys.exit(_register(settings, args))

    uvicorn.run(
        create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level.lower()
    )


if __name__ == "__main__":
    main()
