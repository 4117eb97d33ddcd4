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
from urllib.parse import quote

from flask import Flask, Response, request

from hgen.hub.export.run import ExportSettings, export_labels
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.forms import ExportForm, parse_form
from hgen.hub.web.routes_operator import back_to_operator
from hgen.runtime.errors import HGenError


def zipped(folder: Path, archive: Path, top: str) -> Path:
    """`folder`'s files under one top folder `top`, in a zip at `archive`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, Path(top) / path.relative_to(folder))
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
        try:
            handle, name = _made(ctx, form)
        except (HGenError, OSError) as exc:  # no labels, a full disk, the database: said on the page, never a 500
            return back_to_operator(f"export of {form.model}: {exc}")
        finally:
            running.release()
        size = os.fstat(handle.fileno()).st_size
        return Response(_chunks(handle), mimetype="application/zip", headers={
            "Content-Disposition": _attachment(name), "Content-Length": str(size), "Cache-Control": "no-store"})


def _made(ctx: WebContext, form: ExportForm) -> tuple[BinaryIO, str]:
    """The export zipped and opened, its folder already removed (the open file keeps its bytes until closed); and
    the download's name, `<model>-labels` (the model name a device reported)."""
    work = Path(tempfile.mkdtemp(prefix="hgen-export-"))
    try:
        name = f"{form.model}-labels"
        report = export_labels(ctx.hub.service.kb, form.model, work / "labels",
                               ExportSettings.of_hub(ctx.config, form.min_agreement))
        archive = zipped(report.folder, work / "labels.zip", top=plain(name))  # no "../" in an entry, whatever
        return archive.open("rb"), name
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plain(name: str) -> str:
    """A file name of letters, digits, `.`, `_` and `-` only, not starting with a dot."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "labels"


def _attachment(stem: str) -> str:
    """Content-Disposition naming the zip: ASCII for every browser, the model's own name (RFC 6266) for most."""
    return f"attachment; filename=\"{plain(stem)}.zip\"; filename*=UTF-8''{quote(stem, safe='')}.zip"


def _chunks(handle: BinaryIO, size: int = 64 * 1024) -> Iterator[bytes]:
    """The zip in pieces, closing (and so freeing) the unlinked file at the end or when the client goes away. Small
    pieces: the web server's read_timeout_s bounds each send, and a 1 MiB piece cut off clients under 35 kB/s."""
    with handle:
        while chunk := handle.read(size):
            yield chunk
