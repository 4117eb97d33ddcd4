"""The operator's download of a model's human labels: `hgen-hub export` as a zip, for a team without a shell on
the hub's machine.

The export runs in full (hgen.hub.export.run, all or nothing, typed errors said on the operator page) into a
temporary folder and is zipped there (stored, not deflated: the images are JPEG and PNG already); the zip is opened
and the folder removed before a byte is sent, so nothing stays on disk once the response ends, whether the download
finishes or the client goes away. One export at a time per hub process: a second click, or a second operator, is
told to wait rather than doubling the disk and the knowledge base's read load. The temporary folder is Python's
(TMPDIR): room for the export twice, for as long as the download takes.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from flask import Flask, Response, request

from hgen.hub.errors import ExportError
from hgen.hub.export.run import ExportSettings, export_labels
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.forms import ExportForm, parse_form
from hgen.hub.web.routes_operator import back_to_operator


def zipped(folder: Path, archive: Path) -> Path:
    """`folder`'s files under one top folder named like it, in a zip at `archive`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, Path(folder.name) / path.relative_to(folder))
    return archive


def register(app: Flask, ctx: WebContext) -> None:
    running = threading.Lock()

    @app.post("/operator/export")
    def export() -> Any:
        require_user(ctx, "operator")
        form = parse_form(ExportForm, request.form)
        if not running.acquire(blocking=False):
            return back_to_operator("an export is already being made on this hub process; try again when it is "
                                    "done")
        work = Path(tempfile.mkdtemp(prefix="hgen-export-"))
        try:
            name = f"{re.sub(r'[^A-Za-z0-9._-]', '_', form.model)}-labels"  # a file name, whatever the model
            report = export_labels(ctx.hub.service.kb, form.model, work / name,
                                   ExportSettings.of_hub(ctx.config, form.min_agreement))
            archive = zipped(report.folder, work / f"{name}.zip")
            handle = archive.open("rb")  # read from the open file: the folder goes now, whatever the client does
        except ExportError as exc:
            return back_to_operator(f"export of {form.model}: {exc}")
        finally:
            shutil.rmtree(work, ignore_errors=True)
            running.release()
        size = os.fstat(handle.fileno()).st_size
        return Response(_chunks(handle), mimetype="application/zip", headers={
            "Content-Disposition": f'attachment; filename="{archive.name}"', "Content-Length": str(size),
            "Cache-Control": "no-store"})


def _chunks(handle: BinaryIO, size: int = 1 << 20) -> Iterator[bytes]:
    """The zip in pieces, closing (and so freeing) the unlinked file at the end or when the client goes away."""
    with handle:
        while chunk := handle.read(size):
            yield chunk
