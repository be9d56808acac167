"""ansible as the hub runs it: its environment, the hosts a target selects (--list-hosts), ending a run's processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import sys
import time
from pathlib import Path

from hub.rollouts.models import ANSI, DETAIL_CHARS, InventoryError, UnknownTargetError
from hub.settings import HubSettings

# The playbooks' `hosts:` default (hub/ansible/*.yml): a target only ever narrows this group.
EDGE_GROUP = "edge"
LIST_HOSTS_TIMEOUT_S = 60.0
MARKER = "HUB_ROLLOUT_RUN"
STOP_GRACE_S = 5.0
_UNMATCHED = re.compile(r"Could not match supplied host pattern, ignoring: (\S+)")


def ansible_env(settings: HubSettings) -> dict[str, str]:
    """ansible's environment: the hub's own ansible first on PATH, its ansible.cfg, host keys checked
    (ansible-runner turns that off unless told), no colours; HUB_ANSIBLE_EXTRA_ENV last."""
    env = {"ANSIBLE_HOST_KEY_CHECKING": "True", "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}
    config = settings.ansible_dir.resolve() / "ansible.cfg"
    if config.is_file():
        env["ANSIBLE_CONFIG"] = str(config)
    env |= settings.ansible_extra_env
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', os.environ.get('PATH', ''))}"
    return env


async def list_hosts(settings: HubSettings, target: str) -> list[str]:
    """The inventory's hosts the target selects, as ansible-playbook will (same binary, same patterns)."""
    ansible = Path(sys.executable).parent / "ansible"  # the ansible-core installed with the hub
    binary = str(ansible) if ansible.exists() else shutil.which("ansible")
    if binary is None:
        raise InventoryError("ansible is not installed beside the hub (pip install ansible-core)")
    argv = [binary, "-i", str(settings.inventory)]
    argv += [EDGE_GROUP, "--limit", target, "--list-hosts"]
    if settings.vault_password_file is not None:
        argv += ["--vault-password-file", str(settings.vault_password_file)]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **await asyncio.to_thread(ansible_env, settings)},
        cwd=settings.ansible_dir,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), LIST_HOSTS_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise InventoryError(
            f"listing the inventory's hosts took more than {LIST_HOSTS_TIMEOUT_S:.0f} s"
        ) from None
    errors = err.decode(errors="replace")
    unmatched = _UNMATCHED.findall(errors)
    if unmatched or "leaves us with no hosts" in errors:
        what = f"{', '.join(unmatched)} match" if unmatched else f"{target} matches"
        raise UnknownTargetError(f"{what} no host of the inventory's {EDGE_GROUP!r} group")
    if proc.returncode != 0:
        lines = [line for line in ANSI.sub("", errors).splitlines() if "ERROR" in line] or ["(no message)"]
        raise InventoryError(f"the inventory cannot be read: {lines[0].strip()[:DETAIL_CHARS]}")
    hosts = [line.strip() for line in out.decode().splitlines()[1:] if line.strip()]
    if not hosts:
        raise UnknownTargetError(f"{target} matches no host of the inventory's {EDGE_GROUP!r} group")
    return hosts


def terminate(marker: str) -> None:
    """(blocking) SIGTERM every process whose environment carries the run's marker; SIGKILL what is left after
    STOP_GRACE_S. Linux (/proc); elsewhere only ansible-runner's own kill applies."""
    needle = f"{MARKER}={marker}".encode()

    def processes() -> list[int]:
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                if needle in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except (OSError, ValueError):
                continue  # gone meanwhile, or not ours
        return found

    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, 2.0)):
        pids = processes()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while pids and time.monotonic() < deadline:
            time.sleep(0.1)
            pids = processes()
        if not pids:
            return
