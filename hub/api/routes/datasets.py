"""Dataset export: a zip of the fleet's images and labels in the model factory's layout (hub/export.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask

from hub.api.deps import AdminDep, RuntimeDep
from hub.export import ExportFilters, write_export

router = APIRouter(tags=["datasets"])


def _temporary_zip(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix="export-", suffix=".zip", dir=folder)
    os.close(fd)
    return Path(name)


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


@router.get(
    "/api/v1/datasets/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}, "description": "The dataset as a zip."}},
)
async def export_dataset(
    runtime: RuntimeDep, _: AdminDep, filters: Annotated[ExportFilters, Query()]
) -> FileResponse:
    """The matching results' images with their predictions and operator verdicts, in the layout
    `python -m hub.model_factory classifier|detector --data` reads: classification/, detection/ (YOLO), truth.jsonl
    and manifest.json (filters, counts, which labels an operator verified). 404 `empty_dataset` if nothing matches.
    """
    # Built off the event loop into a temporary file in the data folder (an export can be larger than memory),
    # then streamed; the file is removed once sent.
    path = await asyncio.to_thread(_temporary_zip, runtime.settings.data_dir / "exports")
    try:
        await runtime.db.run(lambda conn: write_export(conn, runtime.images_dir, filters, path))
    except BaseException:
        await asyncio.to_thread(_remove, path)
        raise
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return FileResponse(
        path,
        media_type="application/zip",
        filename=f"dataset-{stamp}.zip",  # sets Content-Disposition: attachment
        background=BackgroundTask(_remove, path),
    )
