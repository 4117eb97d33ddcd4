"""The operator's download of a model's human labels: `hgen-hub export` as a zip, for a team without a shell on
the hub's machine.

POST starts the export in the background (hgen.hub.web.export_jobs: a large one outlasted a proxy's read timeout
when it was made inside the request); the operator page says when it is ready, and GET downloads it. The export
runs in full (hgen.hub.export.run, all or nothing, typed errors said on the operator page) into a temporary folder
and is zipped there (stored, not deflated: the images are JPEG and PNG already); the folder goes once it is zipped.
One export at a time per hub process: a second click, or a second operator, is told to wait rather than doubling
the disk and the knowledge base's read load.
"""

from __future__ import annotations

import os
import re
import shutil
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from flask import Flask, Response, request

from hgen.hub.errors import ExportError
from hgen.hub.export.run import ExportSettings, export_labels
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.web.context import WebContext, require_user
from hgen.hub.web.forms import ExportForm, parse_form
from hgen.hub.web.routes_operator import back_to_operator


def zipped(folder: Path, archive: Path, top: str) -> Path:
    """`folder`'s files under one top folder `top`, in a zip at `archive`."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED, allowZip64=True) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                out.write(path, Path(top) / path.relative_to(folder))
    return archive


def register(app: Flask, ctx: WebContext) -> None:
    jobs = ctx.exports

    @app.post("/operator/export")
    def export() -> Any:
        require_user(ctx, "operator")
        form = parse_form(ExportForm, request.form)
        settings = ExportSettings.of_hub(ctx.config, form.min_agreement)
        name = f"{form.model}-labels"
        try:
            jobs.start(form.model, name,
                       lambda folder, stopped: _made(ctx.hub.service.kb, form.model, settings, folder, name, stopped))
        except (ExportError, OSError) as exc:  # one being made already, a full TMPDIR: said, never a 500
            return back_to_operator(f"export of {form.model}: {exc}")
        return back_to_operator(f"export of {form.model} started: this page offers the zip when it is ready "
                                "(reload it)")

    @app.get("/operator/export/<job_id>")
    def download_export(job_id: str) -> Any:
        require_user(ctx, "operator")
        handle, job = jobs.open(job_id)
        size = os.fstat(handle.fileno()).st_size
        return Response(_chunks(handle), mimetype="application/zip", headers={
            "Content-Disposition": _attachment(job.name), "Content-Length": str(size), "Cache-Control": "no-store"})


def _made(kb: KnowledgeBase, model: str, settings: ExportSettings, work: Path, name: str,
          stopped: Callable[[], bool]) -> Path:
    """The export written into `work` and zipped beside it; the export's folder goes once it is in the zip."""
    report = export_labels(kb, model, work / "labels", settings, stopped)
    try:
        return zipped(report.folder, work / "labels.zip", top=plain(name))  # no "../" in an entry, whatever
    finally:
        shutil.rmtree(report.folder, ignore_errors=True)


def plain(name: str) -> str:
    """A file name of letters, digits, `.`, `_` and `-` only, not starting with a dot."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "labels"


def _attachment(stem: str) -> str:
    """Content-Disposition naming the zip: ASCII for every browser, the model's own name (RFC 6266) for most."""
    return f"attachment; filename=\"{plain(stem)}.zip\"; filename*=UTF-8''{quote(stem, safe='')}.zip"


def _chunks(handle: BinaryIO, size: int = 64 * 1024) -> Iterator[bytes]:
    """The zip in pieces, closing the file at the end or when the client goes away (one replaced or expired
    meanwhile was only unlinked: its bytes stay readable until then, then are freed). Small
    pieces: the web server's read_timeout_s bounds each send, and a 1 MiB piece cut off clients under 35 kB/s."""
    with handle:
        while chunk := handle.read(size):
            yield chunk
