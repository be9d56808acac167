"""The simulated fleet: devices (an sshd in its own network and mount namespaces), the inventory, playbook runs."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "hub" / "ansible"
VENV_BIN = Path(sys.executable).parent
SSHD = Path("/usr/sbin/sshd")
INSTALL_DIR = Path("/opt/edge")
DEVICES = 3
GOOD_VERSION = "0.1.0"


def run(*argv: str | Path, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv], check=check, capture_output=True, text=True, timeout=timeout
    )


@dataclass
class Device:
    """One simulated edge device: a network namespace at 10.200.<index>.2 running sshd."""

    index: int
    netns: str
    host_veth: str
    root: Path  # on the host: this device's private /opt/edge, /etc copy, sshd files
    sshd: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return f"device{self.index}"

    @property
    def address(self) -> str:
        return f"10.200.{self.index}.2"

    def url(self, port: int, path: str) -> str:
        return f"http://{self.address}:{port}{path}"


@dataclass
class PlaybookRun:
    returncode: int
    output: str
    recap: dict[str, dict[str, int]]
    seconds: float

    def changed(self) -> dict[str, int]:
        return {host: counts["changed"] for host, counts in self.recap.items()}


@dataclass
class Fleet:
    devices: list[Device]
    work: Path
    inventory: Path
    api_key: str
    env: dict[str, str]
    artifacts: Path
    timings: dict[str, float] = field(default_factory=dict)

    def ssh(self, device: Device, command: str, timeout: float = 30) -> str:
        """Run a command on the device over the same SSH the playbooks use (its mount namespace)."""
        result = subprocess.run(
            [
                "ssh",
                *self.ssh_options(),
                f"root@{device.address}",
                command,
            ],
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return result.stdout

    def ssh_options(self) -> list[str]:
        return [
            "-i",
            str(self.work / "id_ed25519"),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            f"UserKnownHostsFile={self.work / 'known_hosts'}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
        ]

    def hub_env(self) -> dict[str, Any]:
        """A hub's settings (HUB_*) to roll out to this fleet: its inventory, vault and the same ansible settings
        as `playbook` (the vault through HUB_VAULT_PASSWORD_FILE, not ansible's variable)."""
        keep = (
            "ANSIBLE_SSH_CONTROL_PATH_DIR",
            "ANSIBLE_LOCAL_TEMP",
            "ANSIBLE_NOCOLOR",
            "ANSIBLE_FORCE_COLOR",
        )
        return {
            "HUB_DATA_DIR": str(self.work / "hub"),
            "HUB_ANSIBLE_DIR": str(ANSIBLE_DIR),
            "HUB_INVENTORY": str(self.inventory),
            "HUB_VAULT_PASSWORD_FILE": str(self.work / "vault-password"),
            "HUB_ANSIBLE_EXTRA_ENV": json.dumps({k: self.env[k] for k in keep}),
        }

    def playbook(self, name: str, *args: str, timeout: float = 600) -> PlaybookRun:
        """Run one of hub/ansible's playbooks against the fleet, as `make deploy` would."""
        started = time.monotonic()
        result = subprocess.run(
            [str(VENV_BIN / "ansible-playbook"), "-i", str(self.inventory), name, *args],
            check=False,
            cwd=ANSIBLE_DIR,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        seconds = time.monotonic() - started
        (self.work / "logs").mkdir(exist_ok=True)
        log = self.work / "logs" / f"{len(list((self.work / 'logs').iterdir())):02d}-{name}.log"
        log.write_text(output)
        return PlaybookRun(result.returncode, output, parse_recap(output), seconds)


RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)",
    re.MULTILINE,
)


def parse_recap(output: str) -> dict[str, dict[str, int]]:
    recap_at = output.rfind("PLAY RECAP")
    return {
        m["host"]: {k: int(v) for k, v in m.groupdict().items() if k != "host"}
        for m in RECAP.finditer(output[recap_at:] if recap_at >= 0 else "")
    }


def build_artifacts(out: Path, source: Path = REPO, *, wheelhouse: bool = True) -> None:
    """The process runtime's artifacts: the wheelhouse (cached while the lock file is unchanged) and the wheel."""
    if wheelhouse:
        run(REPO / "deployment/fleet/build-wheelhouse.sh", "--out", out, "--source", source, timeout=600)
    else:  # only the release wheel, e.g. from a modified copy of the repository
        (out / "dist").mkdir(parents=True, exist_ok=True)
        run("uv", "build", "--quiet", "--wheel", "--out-dir", out / "dist", source, timeout=300)


def release_copy(work: Path, version: str, *, broken: bool) -> Path:
    """A copy of the repository whose package has another version (and, if broken, an orchestrator that exits)."""
    target = work / f"src-{version}"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, target / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("edge_model_serving", "edge_orchestrator", "edge_interface", "hub"):
        shutil.copytree(REPO / package, target / package, ignore=ignore)
    shutil.rmtree(target / "hub" / "ansible", ignore_errors=True)
    pyproject = target / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace(f'version = "{GOOD_VERSION}"', f'version = "{version}"', 1)
    )
    for package in ("edge_model_serving", "edge_orchestrator", "edge_interface"):
        init = target / package / "__init__.py"
        init.write_text(init.read_text().replace(f'"{GOOD_VERSION}"', f'"{version}"'))
    if broken:
        main = target / "edge_orchestrator" / "__main__.py"
        main.write_text(
            main.read_text().replace(
                "def main(argv: list[str] | None = None) -> None:\n",
                "def main(argv: list[str] | None = None) -> None:\n"
                '    raise SystemExit("deliberately broken release (tests/fleet)")\n',
                1,
            )
        )
        assert "deliberately broken" in main.read_text()
    return target


def _wait_for_port(address: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((address, port), timeout=1):
            return
        time.sleep(0.1)
    raise AssertionError(f"sshd did not listen on {address}:{port} within {timeout} s")


def _netns_pids(netns: str) -> list[int]:
    result = run("ip", "netns", "pids", netns, check=False)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _kill_netns_processes(netns: str) -> None:
    """Every process of the namespace (sshd, supervisord, the services): TERM, then KILL, bounded in time."""
    for sig, wait_s in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        pids = _netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline and _netns_pids(netns):
            time.sleep(0.1)


def start_device(device: Device, work: Path) -> str:
    """Create the namespace, the veth pair, the private folders and sshd; return the host key line."""
    root = device.root
    (root / "opt-edge").mkdir(parents=True)
    # A private copy of /etc: the playbooks create the service user, which must not reach the host's passwd.
    shutil.copytree("/etc", root / "etc", symlinks=True, ignore_dangling_symlinks=True)
    run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", root / "ssh_host_ed25519_key")
    shutil.copy2(work / "id_ed25519.pub", root / "authorized_keys")
    (root / "authorized_keys").chmod(0o600)
    # StrictModes no: the authorized keys live in the test's temporary folder, under the world-writable /tmp, which
    # sshd refuses for any key file; the file itself is root's and 0600.
    (root / "sshd_config").write_text(
        f"""ListenAddress {device.address}
Port 22
HostKey {root / "ssh_host_ed25519_key"}
PidFile {root / "sshd.pid"}
AuthorizedKeysFile {root / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PrintMotd no
Subsystem sftp internal-sftp
MaxStartups 50
MaxSessions 50
"""
    )
    run(SSHD, "-t", "-f", root / "sshd_config")
    run("ip", "netns", "add", device.netns)
    peer = device.host_veth[:-1] + "d"
    run("ip", "link", "add", device.host_veth, "type", "veth", "peer", "name", peer)
    run("ip", "link", "set", peer, "netns", device.netns)
    run("ip", "addr", "add", f"10.200.{device.index}.1/24", "dev", device.host_veth)
    run("ip", "link", "set", device.host_veth, "up")
    in_ns = ("ip", "netns", "exec", device.netns)
    run(*in_ns, "ip", "addr", "add", f"{device.address}/24", "dev", peer)
    run(*in_ns, "ip", "link", "set", peer, "up")
    run(*in_ns, "ip", "link", "set", "lo", "up")
    script = (
        f"mount --bind {root / 'opt-edge'} {INSTALL_DIR} && mount --bind {root / 'etc'} /etc && "
        f"exec {SSHD} -D -e -f {root / 'sshd_config'}"
    )
    with (root / "sshd.log").open("wb") as log:
        device.sshd = subprocess.Popen(
            [*in_ns, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    _wait_for_port(device.address, 22, timeout=15)
    key_type, key = (root / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    return f"{device.address} {key_type} {key}"


def stop_device(device: Device) -> None:
    _kill_netns_processes(device.netns)
    if device.sshd is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            device.sshd.wait(timeout=5)
    run("ip", "netns", "del", device.netns, check=False)
    run("ip", "link", "del", device.host_veth, check=False)  # gone with the namespace already, normally


def write_inventory(fleet_dir: Path, devices: list[Device], api_key: str, artifacts: Path) -> Path:
    inventory = fleet_dir / "inventory"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    hosts = {
        "all": {
            "children": {
                "edge": {
                    "children": {
                        "site_test": {
                            "children": {
                                "line_test_a": {
                                    "hosts": {d.name: {"ansible_host": d.address} for d in devices[:2]}
                                },
                                "line_test_b": {
                                    "hosts": {d.name: {"ansible_host": d.address} for d in devices[2:]}
                                },
                            }
                        },
                        "station_duck_line": {"hosts": {d.name: None for d in devices}},
                    }
                }
            }
        }
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts, sort_keys=False))
    common = {
        "ansible_user": "root",
        "ansible_ssh_private_key_file": str(fleet_dir / "id_ed25519"),
        # The devices' host keys are pinned in this known_hosts file: no trust on first use, no blanket "no".
        "ansible_ssh_common_args": (
            f"-o UserKnownHostsFile={fleet_dir / 'known_hosts'} -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes"
        ),
        "ansible_python_interpreter": "/usr/bin/python3",
        "edge_runtime": "process",
        "edge_version": GOOD_VERSION,
        "edge_artifacts_dir": str(artifacts),
        "edge_health_timeout_s": 120,
        "edge_health_delay_s": 1,
        "edge_api_key": "{{ vault_edge_api_key }}",
    }
    (inventory / "group_vars" / "edge.yml").write_text(yaml.safe_dump(common, sort_keys=False))
    (inventory / "group_vars" / "line_test_b.yml").write_text(
        yaml.safe_dump({"edge_dashboard_title": "Test line B"})
    )
    vault = inventory / "group_vars" / "all" / "vault.yml"
    vault.write_text(yaml.safe_dump({"vault_edge_api_key": api_key}))
    vault.chmod(0o600)
    password = fleet_dir / "vault-password"
    password.write_text(secrets.token_urlsafe(24))
    password.chmod(0o600)
    run(VENV_BIN / "ansible-vault", "encrypt", "--vault-password-file", password, vault)
    assert vault.read_text().startswith("$ANSIBLE_VAULT"), "the vault file must be encrypted"
    return inventory / "hosts.yml"


def close_control_masters(work: Path) -> None:
    control = work / "cp"
    if not control.is_dir():
        return
    for socket_path in control.iterdir():
        run("ssh", "-o", f"ControlPath={socket_path}", "-O", "exit", "unused", check=False, timeout=10)
