"""The model repository: finds model versions on disk, loads them, reloads them, reports load errors.

Layouts served (each `<name>` is a folder of the models directory):
- `<name>/<version>/model.tflite` + `model.yaml` (versions are integers; `latest` = highest ready one);
- `<name>/*.tflite` + `metadata.json`, as VIO users already have them: served as version 1.

A version that fails to load is listed with its error; the others keep serving. While a new or
changed version loads, the previously loaded model keeps answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge_model_serving.errors import (
    ManifestError,
    ModelNotFoundError,
    ModelNotReadyError,
    ServingError,
    VersionNotFoundError,
)
from edge_model_serving.manifest import load_manifest
from edge_model_serving.model import LoadedModel
from edge_model_serving.schemas import ModelInfo, ModelList, VersionInfo

log = logging.getLogger(__name__)

_WATCHED_FILES = ("model.yaml", "metadata.json", "labels.txt")
Signature = tuple[tuple[str, int, int], ...]
Status = Literal["loading", "ready", "failed"]


@dataclass
class VersionEntry:
    name: str
    version: int
    path: Path
    signature: Signature = ()
    status: Status = "loading"
    error: str | None = None
    model: LoadedModel | None = None
    source: str | None = None
    loaded_at: float | None = None


@dataclass
class _Pending:
    """A version seen changed on disk, loaded once it is unchanged for one more scan (copy finished)."""

    signature: Signature
    seen_at: float = field(default_factory=time.monotonic)


def _model_file(folder: Path) -> Path | None:
    preferred = folder / "model.tflite"
    if preferred.is_file():
        return preferred
    files = sorted(p for p in folder.glob("*.tflite") if p.is_file())
    return files[0] if files else None


def _signature(folder: Path) -> Signature:
    files = sorted(folder.glob("*.tflite")) + [folder / n for n in _WATCHED_FILES]
    out = []
    for path in files:
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue
        out.append((path.name, stat.st_mtime_ns, stat.st_size))
    return tuple(out)


def scan_models_dir(models_dir: Path) -> dict[tuple[str, int], Path]:
    """Every (name, version) on disk and its folder."""
    found: dict[tuple[str, int], Path] = {}
    if not models_dir.is_dir():
        log.warning("models directory %s does not exist", models_dir)
        return found
    for model_dir in sorted(models_dir.iterdir()):
        if not model_dir.is_dir() or model_dir.name.startswith("."):
            continue
        try:  # a folder may vanish or be unreadable while we look: skip it this time
            versions = [d for d in model_dir.iterdir() if d.is_dir() and d.name.isdigit() and _model_file(d)]
            for version_dir in versions:
                found[(model_dir.name, int(version_dir.name))] = version_dir
            if not versions and _model_file(model_dir):
                found[(model_dir.name, 1)] = model_dir
        except OSError as exc:
            log.warning("skipping %s: %s", model_dir, exc)
    return found


def load_version(
    folder: Path, name: str, version: int, num_threads: int, pool_size: int
) -> tuple[LoadedModel, str]:
    """Load and warm up one version folder: (model, manifest file name). Raises ManifestError saying why not."""
    manifest, labels, source = load_manifest(folder)
    model_file = _model_file(folder)
    if model_file is None:
        raise ManifestError("no .tflite file in the folder")
    tflite_files = list(folder.glob("*.tflite"))
    if model_file.name != "model.tflite" and len(tflite_files) > 1:
        raise ManifestError(f"{len(tflite_files)} .tflite files and none named model.tflite: which one?")
    try:
        model = LoadedModel(name, version, model_file, manifest, labels, num_threads, pool_size)
    except (ValueError, RuntimeError) as exc:  # LiteRT raises these for corrupt or unsupported files
        raise ManifestError(f"LiteRT could not load {model_file.name}: {exc}") from exc
    model.warm_up()
    return model, source


def _scan_with_signatures(models_dir: Path) -> dict[tuple[str, int], tuple[Path, Signature]]:
    # One worker-thread hop per scan, not one per version and poll.
    return {key: (path, _signature(path)) for key, path in scan_models_dir(models_dir).items()}


class ModelRegistry:
    def __init__(self, models_dir: Path, num_threads: int, pool_size: int) -> None:
        self.models_dir = models_dir
        self.num_threads = num_threads
        self.pool_size = pool_size
        self._entries: dict[tuple[str, int], VersionEntry] = {}
        self._pending: dict[tuple[str, int], _Pending] = {}
        self._lock = asyncio.Lock()
        self._initial_scan_done = False

    # --- loading ---------------------------------------------------------------------------------

    def _load(self, entry: VersionEntry) -> tuple[LoadedModel, str]:
        return load_version(entry.path, entry.name, entry.version, self.num_threads, self.pool_size)

    async def _load_entry(self, key: tuple[str, int], path: Path, signature: Signature) -> None:
        entry = self._entries.get(key)
        if entry is None:
            entry = VersionEntry(name=key[0], version=key[1], path=path)
            self._entries[key] = entry
        candidate = VersionEntry(name=key[0], version=key[1], path=path, signature=signature)
        try:
            model, source = await asyncio.to_thread(self._load, candidate)
        except Exception as exc:  # any failure is this version's, never the server's
            if isinstance(exc, ServingError):
                detail = exc.detail
            else:
                log.exception("unexpected error loading model %s version %d", *key)
                detail = f"unexpected error while loading: {exc!r}"
            entry.signature = signature
            if entry.model is not None:  # keep serving what was loaded before
                entry.error = f"reload failed, still serving the previous file: {detail}"
            else:
                entry.status, entry.error = "failed", detail
            log.warning("model %s version %d failed to load: %s", key[0], key[1], detail)
            return
        entry.model, entry.source, entry.signature = model, source, signature
        entry.status, entry.error, entry.loaded_at = "ready", None, time.time()
        log.info("model %s version %d ready (%s)", key[0], key[1], model.decoder)

    async def sync(self, *, force: set[str] | None = None, settle: bool = False) -> None:
        """Bring the loaded set in line with the disk.

        `force`: model names to reload even if unchanged. `settle`: only load a version once its files
        are unchanged since the previous scan (used by the watcher, so half-copied files are not loaded).
        """
        async with self._lock:
            on_disk = await asyncio.to_thread(_scan_with_signatures, self.models_dir)
            for key in [k for k in self._entries if k not in on_disk]:
                log.info("model %s version %d removed from disk", *key)
                del self._entries[key]
            for key, (path, signature) in on_disk.items():
                entry = self._entries.get(key)
                changed = entry is None or entry.signature != signature or entry.path != path
                if not changed and not (force and key[0] in force):
                    self._pending.pop(key, None)
                    continue
                if settle and changed:
                    pending = self._pending.get(key)
                    if pending is None or pending.signature != signature:
                        self._pending[key] = _Pending(signature)
                        if entry is None:
                            self._entries[key] = VersionEntry(name=key[0], version=key[1], path=path)
                        continue
                self._pending.pop(key, None)
                await self._load_entry(key, path, signature)
            self._initial_scan_done = True

    async def watch(self, interval_s: float) -> None:
        """Poll the models directory forever (polling works on every filesystem, inotify does not)."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.sync(settle=True)
            except Exception:  # the watcher must outlive any surprise on disk
                log.exception("model directory scan failed")

    async def reload(self, name: str) -> ModelInfo:
        await self.sync(force={name})
        return self.info(name)  # ModelNotFoundError when the name is on disk neither now nor before

    # --- lookups -----------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the first scan is done and nothing is still loading (failed versions don't block)."""
        return self._initial_scan_done and all(e.status != "loading" for e in self._entries.values())

    def names(self) -> list[str]:
        return sorted({key[0] for key in self._entries})

    def get(self, name: str, version: int | None = None) -> LoadedModel:
        versions = {v: e for (n, v), e in self._entries.items() if n == name}
        if not versions:
            raise ModelNotFoundError(f"no model named {name!r}; GET /v1/models lists the models served")
        if version is None:
            ready = [v for v, e in versions.items() if e.model is not None]
            if not ready:
                raise ModelNotReadyError(
                    f"model {name!r} has no version ready: {self._why(versions.values())}"
                )
            return versions[max(ready)].model  # type: ignore[return-value]
        entry = versions.get(version)
        if entry is None:
            raise VersionNotFoundError(f"model {name!r} has no version {version}; it has {sorted(versions)}")
        if entry.model is None:
            raise ModelNotReadyError(f"model {name!r} version {version} is not ready: {self._why([entry])}")
        return entry.model

    @staticmethod
    def _why(entries: Iterable[VersionEntry]) -> str:
        reasons = [f"v{e.version} {e.status}" + (f" ({e.error})" if e.error else "") for e in entries]
        return "; ".join(reasons)

    def info(self, name: str) -> ModelInfo:
        entries = sorted((e for (n, _), e in self._entries.items() if n == name), key=lambda e: e.version)
        if not entries:
            raise ModelNotFoundError(f"no model named {name!r}; GET /v1/models lists the models served")
        ready = [e.version for e in entries if e.model is not None]
        return ModelInfo(
            name=name,
            latest_version=max(ready) if ready else None,
            versions=[_version_info(e) for e in entries],
        )

    def list(self) -> ModelList:
        return ModelList(models=[self.info(name) for name in self.names()])

    def counts(self) -> dict[str, int]:
        out = {"ready": 0, "loading": 0, "failed": 0}
        for entry in self._entries.values():
            out[entry.status] = out.get(entry.status, 0) + 1
        return out


def _version_info(entry: VersionEntry) -> VersionInfo:
    model = entry.model
    return VersionInfo(
        version=entry.version,
        status=entry.status,
        error=entry.error,
        path=str(entry.path),
        source=entry.source,
        task=model.manifest.task if model else None,
        decoder=model.decoder if model and model.decoder != "classification" else None,
        labels=model.labels if model else [],
        inputs=model.inputs_info() if model else [],
        outputs=model.outputs_info() if model else [],
        loaded_at=entry.loaded_at,
    )
