"""`hgen-hub export`, `add-gold`, `list-gold` and `retire-gold`: the verbs that take people's labels out of the hub
and put known answers in, or take a wrong one back. Thin: the work is in hgen.hub.export, hgen.hub.gold_folder and
hgen.hub.gold_review; exit codes of errors are `cli.main`'s."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from hgen.hub.config import HubConfig, load_hub_config
from hgen.hub.errors import ExportError, GoldFolderError, HubError
from hgen.hub.kb.engine import make_engine
from hgen.hub.kb.migrate import current_revision

if TYPE_CHECKING:
    from hgen.hub.gold import GoldBook, GoldRating


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def export(config_path: str, model: str, out: Path, min_agreement: float = 0.0) -> int:
    from hgen.hub.export.run import ExportSettings, export_labels
    from hgen.hub.kb.store import KnowledgeBase

    config = load_hub_config(config_path)
    settings = ExportSettings.of_hub(config, min_agreement)
    _refuse_new_knowledge_base(config.knowledge_base.url, ExportError, "nothing exported")
    kb = KnowledgeBase.of_config(config.knowledge_base)
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


def list_gold(config_path: str, disputed_only: bool = False) -> int:
    """Every gold task, most disputed first: what an operator reads before `retire-gold`."""
    from hgen.hub.config import people_class_names
    from hgen.hub.gold_review import MIN_DISPUTED, gold_standings

    config = load_hub_config(config_path)
    names = people_class_names(config)
    with _gold_book(config, "nothing listed") as book, book.kb.session() as s:
        standings = gold_standings(s)
    shown = [g for g in standings if g.disputed or not disputed_only]
    print(f"{'sample':<36}  {'known class':<16}  people  agree  most given otherwise")
    for g in shown:
        agree = "-" if g.agreement is None else f"{g.agreement:.0%}"
        other = "-" if g.other_class is None else f"{_name(names, g.other_class)} ({g.other_count})"
        flag = "  DISPUTED" if g.disputed else ""
        print(f"{g.sample_id:<36}  {_name(names, g.class_id):<16}  {g.people:>6}  {agree:>5}  {other}{flag}")
    disputed = sum(1 for g in standings if g.disputed)
    print(f"{len(standings)} gold task(s), {disputed} disputed (of {MIN_DISPUTED} or more people who answered, more gave "
          f"one other class than the known one); retire a wrong one with `hgen-hub retire-gold --sample ID`")
    return 0


def retire_gold(config_path: str, sample_ids: list[str]) -> int:
    from hgen.hub.gold_review import retire_gold as retire

    config = load_hub_config(config_path)
    with _gold_book(config, "nothing retired") as book:
        report = retire(book, sample_ids)
    before = f" ({len(report.already_retired)} retired before)" if report.already_retired else ""
    print(f"hgen-hub retire-gold: retired {len(report.retired)} gold task(s){before}; their answers no longer rate "
          f"anyone; {report.withdrawn} open cop{'y' if report.withdrawn == 1 else 'ies'} withdrawn")
    for rating in report.resumed:
        print(f"  resumed {rating.annotator_id}: {_rated(rating)}")
    for rating in report.still_paused:
        print(f"  still paused {rating.annotator_id}: {_rated(rating)}")
    return 0


def _rated(rating: GoldRating) -> str:
    accuracy = rating.accuracy
    return "no gold rated now" if accuracy is None else f"gold accuracy now {accuracy:.0%} of {rating.rated}"


def _name(names: Sequence[str], class_id: int) -> str:
    return names[class_id] if 0 <= class_id < len(names) else f"class {class_id}"


@contextmanager
def _gold_book(config: HubConfig, outcome: str) -> Iterator[GoldBook]:
    """The hub's gold book on the configured knowledge base (refused, with `outcome`, when it is not there), closed
    after."""
    from hgen.hub.gold import GoldBook
    from hgen.hub.kb.store import KnowledgeBase

    _refuse_new_knowledge_base(config.knowledge_base.url, GoldFolderError, outcome)
    kb = KnowledgeBase.of_config(config.knowledge_base)
    try:
        yield GoldBook(kb, config.gold, aggregator=config.aggregator)
    finally:
        kb.close()
