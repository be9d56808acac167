"""A simulated fleet for the roll-out playbooks: each device is an sshd in its own network namespace, with its own
mount namespace in which /opt/edge (its install directory) and /etc (its users) are private folders."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fleet.fleet import (
    ANSIBLE_DIR,
    DEVICES,
    INSTALL_DIR,
    REPO,
    SSHD,
    VENV_BIN,
    Device,
    Fleet,
    build_artifacts,
    close_control_masters,
    run,
    start_device,
    stop_device,
    write_inventory,
)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """Three devices reached over real SSH, an inventory with a vault, and the release artifacts."""
    if os.geteuid() != 0:
        pytest.skip("the simulated fleet needs root (network and mount namespaces)")
    if not SSHD.exists():
        pytest.fail("the simulated fleet needs sshd: apt-get install openssh-server (make test installs it)")
    for tool in ("ip", "unshare", "ssh", "ssh-keygen", "uv"):
        if shutil.which(tool) is None:
            pytest.fail(f"the simulated fleet needs {tool!r} (iproute2, util-linux, openssh-client, uv)")

    started = time.monotonic()
    work = tmp_path_factory.mktemp("fleet")
    work.chmod(0o700)
    artifacts = REPO / "build" / "fleet" / "test"
    build_artifacts(artifacts)
    timings = {"artifacts_s": time.monotonic() - started}

    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fleet-test", "-f", work / "id_ed25519")
    created: list[Path] = []
    for path in (INSTALL_DIR, Path("/run/sshd")):  # mount point, and sshd's privilege separation folder
        if not path.exists():
            path.mkdir(parents=True, mode=0o755)
            created.append(path)
    tag = f"{os.getpid() % 100000}"
    devices = [
        Device(index=i, netns=f"vio-fleet-{tag}-{i}", host_veth=f"vf{tag}{i}h", root=work / f"device{i}")
        for i in range(1, DEVICES + 1)
    ]
    try:
        known_hosts = [start_device(d, work) for d in devices]
        (work / "known_hosts").write_text("\n".join(known_hosts) + "\n")
        api_key = secrets.token_urlsafe(32)
        inventory = write_inventory(work, devices, api_key, artifacts)
        (work / "cp").mkdir()
        env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(ANSIBLE_DIR / "ansible.cfg"),
            "ANSIBLE_VAULT_PASSWORD_FILE": str(work / "vault-password"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(work / "cp"),
            "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_FORCE_COLOR": "0",
            "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        }
        timings["fleet_s"] = time.monotonic() - started
        yield Fleet(devices, work, inventory, api_key, env, artifacts, timings)
    finally:
        close_control_masters(work)
        for device in devices:
            stop_device(device)
        for path in reversed(created):
            with contextlib.suppress(OSError):
                path.rmdir()
