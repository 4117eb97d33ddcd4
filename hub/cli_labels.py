"""`hgen-hub export` and `hgen-hub add-gold`: the verbs that take people's labels out of the hub and put known
answers in. Thin: the work is in hgen.hub.export and hgen.hub.gold_folder; exit codes of errors are `cli.main`'s."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

from hgen.hub.config import load_hub_config
from hgen.hub.errors import ExportError, GoldFolderError, HubError
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import current_revision

def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def export(config_path: str, model: str, out: Path, min_agreement: float = 0.0) -> int:
    from hgen.hub.export.run import ExportSettings, export_labels
    from hgen.hub.kb.store import KnowledgeBase

    config = load_hub_config(config_path)
    settings = ExportSettings.of_hub(config, min_agreement)
    _refuse_new_knowledge_base(config.knowledge_base.url, ExportError, "nothing exported")
    kbc = config.knowledge_base
    kb = KnowledgeBase.open(kbc.url, image_dir=kbc.image_dir, inline_max_bytes=kbc.inline_image_max_bytes,
                            migrate=kbc.migrate)
    stopped = signal.signal(signal.SIGTERM, _interrupt)  # timeout, systemd, docker: cleaned up as on Ctrl-C
    try:
        report = export_labels(kb, model, out, settings)
    except KeyboardInterrupt:
        print(f"hgen-hub export: interrupted; nothing written to {out}", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, stopped)
        kb.close()
    splits = ", ".join(f"{split} {n}" for split, n in sorted(report.written.items()))
    left = "; ".join(f"{n} {reason}" for reason, n in report.skipped.items())
    print(f"hgen-hub export: {sum(report.written.values())} labelled images of {model} ({splits}; "
          f"{report.simulated} labelled by SIMULATED annotators) in {report.data_format} layout at {report.folder}; "
          f"read back with --dataset {report.dataset}{'; left out: ' + left if left else ''}")
    for note in report.notes:
        print(f"  note: {note}")
    return 0


def _refuse_new_knowledge_base(url: str, error: type[HubError] = GoldFolderError,
                               outcome: str = "nothing added") -> None:
    """These verbs work on a serving hub's knowledge base: one not there (a relative SQLite path read from another
    working folder) would be made anew, empty, and the gold added where no hub reads it."""
    from sqlalchemy.engine import make_url

    made = make_url(url)
    if made.get_backend_name() == "sqlite" and made.database not in (None, "", ":memory:") \
            and not Path(made.database).exists():
        raise error(f"no knowledge base at {made.database} (a relative path is read from the working folder): "
                    f"run this where the hub runs, or hgen-hub migrate first; {outcome}")
    engine = make_engine(url)
    try:
        if current_revision(engine) is None:
            raise error(f"the knowledge base at {made.render_as_string(hide_password=True)} has no schema: "
                        f"hgen-hub migrate first; {outcome}")
    finally:
        engine.dispose()


def add_gold(config_path: str, folder: Path) -> int:
    """0 when every picture was added (or was gold already), 1 when some were refused (the rest are added)."""
    from hgen.hub.config import people_class_names
    from hgen.hub.gold_folder import add_gold_folder
    from hgen.hub.service import HubService

    config = load_hub_config(config_path)
    _refuse_new_knowledge_base(config.knowledge_base.url)
    service = HubService.from_config(config)
    try:
        if (missing := service.kb.image_dir_missing()) is not None:
            raise GoldFolderError(f"knowledge_base.image_dir {missing} is not a folder here, and samples' images are "
                                  "files in it: run this where the hub runs; nothing added")
        report = add_gold_folder(service.gold, folder, people_class_names(config), config.limits)
        total = service.gold.count()
    finally:
        service.close()
    added = ", ".join(f"{name} {n}" for name, n in report.added.items()) or "none"
    print(f"hgen-hub add-gold: added {sum(report.added.values())} gold task(s) ({added}); {report.already_gold} "
          f"already gold; {len(report.refused)} refused; the hub has {total} gold task(s)")
    for path, why in report.refused:
        print(f"  refused {path}: {why}", file=sys.stderr)
    return 1 if report.refused else 0
