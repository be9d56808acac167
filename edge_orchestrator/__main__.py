"""`python -m edge_orchestrator` runs the orchestrator; `--check-config FILE...` validates station files and
`--check-integrations FILE` the integrations file (PLC handshakes, MQTT, webhooks, recipes)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import uvicorn
from pydantic import ValidationError

from edge_orchestrator.api.app import create_app
from edge_orchestrator.errors import IntegrationError, StationError
from edge_orchestrator.integrations.config import load_integrations, secrets
from edge_orchestrator.settings import OrchestratorSettings
from edge_orchestrator.station import load_station


def check_config(paths: list[Path]) -> int:
    """Print every error of every file with its location; exit status 1 if any file is invalid."""
    failed = 0
    for path in paths:
        try:
            station = load_station(path)
        except StationError as exc:
            failed += 1
            print(f"{path}: INVALID: {exc.detail}")
            for error in exc.errors:
                print(f"  {error['location'] or '(file)'}: {error['message']}")
            continue
        cameras = ", ".join(f"{c.id} ({c.source.type}, {c.model.name})" for c in station.cameras)
        print(f"{path}: OK: station {station.id!r} revision {station.revision}; cameras: {cameras}")
    return 1 if failed else 0


def check_integrations(path: Path, *, secrets_required: bool = False) -> int:
    """Print every error with its location, and whether each named secret can be read here; exit status 1
    for an invalid file, or (when starting the orchestrator) for a secret that cannot be read."""
    try:
        config = load_integrations(path)
    except IntegrationError as exc:
        print(f"{path}: INVALID: {exc.detail}")
        for error in exc.errors:
            print(f"  {error['location'] or '(file)'}: {error['message']}")
        return 1
    parts = [name for name in ("opcua", "modbus", "mqtt") if getattr(config, name) is not None]
    parts += [f"webhook {w.name}" for w in config.webhooks]
    print(f"{path}: OK: {', '.join(parts) or 'nothing enabled'}; recipes: {dict(config.recipes) or 'none'}")
    failed = 0
    for where, secret in secrets(config):
        try:
            secret.read(path.parent)
        except IntegrationError as exc:
            failed += 1
            print(f"  {where}: {'ERROR' if secrets_required else 'not available here'}: {exc.detail}")
    return 1 if failed and secrets_required else 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m edge_orchestrator", description=__doc__)
    parser.add_argument(
        "--check-config", nargs="+", type=Path, metavar="FILE", help="validate station files and exit"
    )
    parser.add_argument(
        "--check-integrations",
        nargs="+",
        type=Path,
        metavar="FILE",
        help="validate integrations files and exit",
    )
    parser.add_argument("--host", help="interface to bind (env EDGE_ORCHESTRATOR_HOST)")
    parser.add_argument("--port", type=int, help="port (env EDGE_ORCHESTRATOR_PORT, default 8000)")
    parser.add_argument("--data-dir", type=Path, help="results, images, key (env EDGE_ORCHESTRATOR_DATA_DIR)")
    parser.add_argument(
        "--stations-dir", type=Path, help="station files (env EDGE_ORCHESTRATOR_STATIONS_DIR)"
    )
    parser.add_argument("--default-station", help="station to activate on first start")
    parser.add_argument("--model-server-url", help="edge_model_serving base URL")
    args = parser.parse_args(argv)
    if args.check_config or args.check_integrations:
        status = check_config(args.check_config) if args.check_config else 0
        for path in args.check_integrations or []:
            status |= check_integrations(path)
        sys.exit(status)

    checks = ("check_config", "check_integrations")
    overrides = {k: v for k, v in vars(args).items() if v is not None and k not in checks}
    try:
        settings = OrchestratorSettings(**overrides)
    except ValidationError as exc:  # the variables' names and what is wrong, not a traceback
        print(f"invalid settings (EDGE_ORCHESTRATOR_*): {exc}", file=sys.stderr)
        sys.exit(2)
    integrations = settings.integrations_file
    if integrations is not None and check_integrations(integrations, secrets_required=True) != 0:
        sys.exit(1)  # said above, with locations: better than a traceback from the lifespan
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # asyncua logs every session and request at INFO; its warnings are what an operator needs.
    logging.getLogger("asyncua").setLevel(max(logging.WARNING, logging.getLogger().level))
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=int(settings.shutdown_grace_s) + 1,
    )


if __name__ == "__main__":
    main()
