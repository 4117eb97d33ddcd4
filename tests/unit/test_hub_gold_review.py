"""Reviewing gold: a wrong known class is found by what people answered, retired, and the careful people it paused
are resumed; the picture can then be added again under its right class. SQLite and PostgreSQL (kb_url)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hgen.hub.cli import main
from hgen.hub.config import HubConfig, parse_hub_config
from hgen.hub.errors import InvalidRequestError
from hgen.hub.gold_folder import add_gold_folder
from hgen.hub.gold_review import gold_standings, retire_gold
from hgen.hub.kb.guards import WITHDRAWN
from hgen.hub.kb.models import Assignment
from hgen.hub.kb.store import KnowledgeBase
from hgen.hub.service import HubService
from hgen.hub.testing.fixtures import kb_url, pg_url  # noqa: F401 (pytest fixtures)
from hgen.hub.testing.samples import png_image
from hgen.protos import hub_pb2

RIGHT, WRONG_KNOWN, TRUE_OF_WRONG = 2, 5, 2  # the wrong gold shows a class-2 picture stored as class 5
CAREFUL, SLOPPY = ("c1", "c2", "c3"), "sloppy"


def hub_config(url: str) -> HubConfig:
    return parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url},
                             "gold": {"share": 0.5, "min_answers": 5, "pause_below": 0.9}})


@pytest.fixture
def service(kb_url: str) -> Iterator[HubService]:  # noqa: F811
    config = hub_config(kb_url)
    hub = HubService(config, KnowledgeBase.open(kb_url))
    try:
        yield hub
    finally:
        hub.close()


def answer_gold(service: HubService, who: str, answer_of: dict[str, int], order: list[str]) -> None:
    """`who` is given every gold task first, then answers them in `order` (a pause withdraws the rest)."""
    service.annotators.register(who)
    tasks = {}
    while (task := service.gold.assign(who)) is not None and task.sample_id not in tasks:
        tasks[task.sample_id] = task
    for sample_id in order:
        if service.gold.paused_reason(who) is not None:
            return
        task = tasks[sample_id]
        service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id=who,
                                                        class_id=answer_of[sample_id], operations=1, latency_s=1.0,
                                                        simulated=True))


def people_answer(service: HubService) -> tuple[list[str], str]:
    """Five right gold tasks and one wrong; three careful people answer 2 on all (the wrong one last, so it is the
    one that pauses them: 5 of 6 is under 90%), a sloppy one answers 0 on all (paused at 0 of 5)."""
    config = service.config
    right = [service.gold.add(png_image(seed=s), RIGHT, config.num_classes, config.limits) for s in range(5)]
    wrong = service.gold.add(png_image(seed=99), WRONG_KNOWN, config.num_classes, config.limits)
    for who in CAREFUL:
        answer_gold(service, who, {**{r: RIGHT for r in right}, wrong: TRUE_OF_WRONG}, [*right, wrong])
    answer_gold(service, SLOPPY, {g: 0 for g in [*right, wrong]}, [*right, wrong])
    service.annotators.register("op-paused")
    service.gold.pause("op-paused", "paused by an operator")
    return right, wrong


def test_a_wrong_gold_is_listed_first_retired_and_the_careful_people_it_paused_resume(service: HubService) -> None:
    right, wrong = people_answer(service)
    config = service.config
    unrelated = service.gold.add(png_image(seed=50), RIGHT, config.num_classes, config.limits)
    service.annotators.register("c4")
    while (task := service.gold.assign("c4")) is not None and task.sample_id != wrong:
        pass  # c4 holds the wrong gold open when it is retired
    assert task is not None
    assert all(service.gold.paused_reason(who) for who in (*CAREFUL, SLOPPY))
    with service.kb.session() as s:
        standings = gold_standings(s)
    first = standings[0]
    assert (first.sample_id, first.people, first.agreeing, first.other_class, first.other_count) == \
        (wrong, 3, 0, TRUE_OF_WRONG, 3)  # the sloppy one was paused before reaching it
    assert first.disputed and not any(g.disputed for g in standings[1:])
    assert {g.sample_id for g in standings[1:]} == {*right, unrelated}
    assert all(g.people == 4 and g.agreeing == 3 for g in standings if g.sample_id in right)

    nobody = retire_gold(service.gold, [unrelated])  # given to nobody: nobody's rating changed
    assert nobody.retired == (unrelated,) and not nobody.resumed and not nobody.still_paused
    assert all(service.gold.paused_reason(who) for who in CAREFUL)
    report = retire_gold(service.gold, [wrong])
    assert report.retired == (wrong,) and report.withdrawn == 1
    assert [r.annotator_id for r in report.resumed] == list(CAREFUL)
    assert all(r.accuracy == 1.0 and r.rated == 5 for r in report.resumed)
    assert [r.annotator_id for r in report.still_paused] == [SLOPPY]
    assert all(service.gold.paused_reason(who) is None for who in CAREFUL)
    assert service.gold.paused_reason(SLOPPY) is not None
    assert service.gold.paused_reason("op-paused") == "paused by an operator"  # an operator's pause is theirs
    assert service.gold.count() == 5 and service.gold.truth(wrong) is None
    with service.kb.session() as s:
        assert wrong not in {g.sample_id for g in gold_standings(s)}
        held = s.query(Assignment.status).filter(Assignment.sample_id == wrong, Assignment.annotator_id == "c4").all()
        assert [row.status for row in held] == [WITHDRAWN]
    again = retire_gold(service.gold, [wrong])  # a retire cut short before its resumes is run again
    assert again.retired == () and again.already_retired == (wrong,) and not again.resumed
    assert [r.annotator_id for r in again.still_paused] == [SLOPPY]


def test_after_a_retire_gold_keeps_its_share_of_each_run(service: HubService) -> None:
    """Gold given was counted through the gold rows: a retire made everyone who had it owe gold, and their next
    tasks came out gold, several in a row."""
    from hgen.hub.testing.samples import make_request, make_sample

    config = parse_hub_config({"devices": ["cam-1"], "gold": {"share": 0.1, "min_answers": 100}})
    service.gold.config = config.gold
    service.gold.draw = lambda: 0.99  # the gold task falls last in each run of 10
    for seed in range(10):
        service.gold.add(png_image(seed=seed + 10), RIGHT, config.num_classes, config.limits)
    service.submit(make_request("cam-1", [make_sample("cam-1", confidence=0.4) for _ in range(40)], m=1), "grpc")
    service.annotators.register("ann")
    kinds, given = [], []
    for _ in range(30):
        task = service.annotators.next_task("ann")
        assert task is not None
        is_gold = service.gold.truth(task.sample_id) is not None
        kinds.append("gold" if is_gold else "device")
        given += [task.sample_id] if is_gold else []
        service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="ann", class_id=RIGHT,
                                                        operations=1, latency_s=1.0, simulated=True))
        if len(kinds) == 20:
            retire_gold(service.gold, given)
    assert kinds == (["device"] * 9 + ["gold"]) * 3


def test_a_wrong_gold_many_dispute_ranks_above_one_person_slips_and_repeats_count_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": url},
                               "gold": {"share": 0.5, "min_answers": 1000}})
    service = HubService(config, KnowledgeBase.open(url))
    try:
        slips = [service.gold.add(png_image(seed=s), RIGHT, config.num_classes, config.limits) for s in range(25)]
        wrong = service.gold.add(png_image(seed=99), WRONG_KNOWN, config.num_classes, config.limits)
        answer_gold(service, "a0", {g: 0 for g in [*slips, wrong]}, [*slips, wrong])  # one slip on each
        answer_gold(service, "a1", {wrong: WRONG_KNOWN}, [wrong])
        for who in ("a2", "a3", "a4"):
            answer_gold(service, who, {wrong: TRUE_OF_WRONG}, [wrong])
        with service.kb.session() as s:
            standings = gold_standings(s, limit=20)
        assert standings[0].sample_id == wrong and standings[0].disputed  # 20% of 5 agree, below 0% of 1
        assert (standings[0].people, standings[0].agreeing, standings[0].other_count) == (5, 1, 3)
        repeated = service.gold.add(png_image(seed=77), RIGHT, config.num_classes, config.limits)
        service.annotators.register("r")
        for _ in range(3 * 27):  # every gold, three times over: r answers the new one wrong each time
            task = service.gold.assign("r")
            assert task is not None
            service.annotators.submit_answer(hub_pb2.Answer(task_id=task.task_id, annotator_id="r", class_id=0,
                                                            operations=1, latency_s=1.0, simulated=True))
        with service.kb.session() as s:
            mine = next(g for g in gold_standings(s) if g.sample_id == repeated)
        assert (mine.people, mine.other_count, mine.disputed) == (1, 1, False)  # one person, three times: no dispute
    finally:
        service.close()


def test_retired_gold_is_no_longer_handed_out_and_its_picture_can_be_gold_again(service: HubService,
                                                                                tmp_path: Path) -> None:
    config = service.config
    wrong = service.gold.add(png_image(seed=7), WRONG_KNOWN, config.num_classes, config.limits)
    service.annotators.register("late")
    held = service.gold.assign("late")  # open when the gold is retired: withdrawn
    assert held is not None and held.sample_id == wrong
    report = retire_gold(service.gold, [wrong])
    assert report.withdrawn == 1
    service.annotators.register("next")
    assert service.gold.assign("next") is None  # no gold left to give
    folder = tmp_path / "gold" / str(TRUE_OF_WRONG)
    folder.mkdir(parents=True)
    (folder / "again.png").write_bytes(png_image(seed=7).data)
    names = [str(c) for c in range(config.num_classes)]
    added = add_gold_folder(service.gold, tmp_path / "gold", names, config.limits)
    assert added.added == {str(TRUE_OF_WRONG): 1} and not added.refused  # before: "already gold under class 5"


def test_retire_is_all_or_nothing(service: HubService) -> None:
    config = service.config
    gold = service.gold.add(png_image(seed=1), RIGHT, config.num_classes, config.limits)
    with pytest.raises(InvalidRequestError, match="not a gold task: 'typo'; none retired"):
        retire_gold(service.gold, [gold, "typo"])
    with pytest.raises(InvalidRequestError, match="no gold task given"):
        retire_gold(service.gold, [])
    assert service.gold.truth(gold) == RIGHT


def test_the_commands_list_disputed_gold_and_retire_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'hub.db'}"
    config_file = tmp_path / "hub.yaml"
    config_file.write_text(yaml.safe_dump({"devices": ["cam-1"], "knowledge_base": {"url": url},
                                           "gold": {"share": 0.5, "min_answers": 5, "pause_below": 0.9}}))
    hub = HubService(hub_config(url), KnowledgeBase.open(url))
    try:
        _, wrong = people_answer(hub)
    finally:
        hub.close()
    capsys.readouterr()
    assert main(["list-gold", "--config", str(config_file), "--disputed"]) == 0
    listed = capsys.readouterr().out
    assert f"{wrong}  5" in listed and "DISPUTED" in listed and listed.count("DISPUTED") == 1
    assert "6 gold task(s), 1 disputed" in listed and "people" in listed
    assert main(["retire-gold", "--config", str(config_file), "--sample", "typo"]) == 2
    assert "not a gold task: 'typo'" in capsys.readouterr().err
    assert main(["retire-gold", "--config", str(config_file), "--sample", wrong]) == 0
    said = capsys.readouterr().out
    assert "retired 1 gold task(s)" in said and "resumed c1: gold accuracy now 100% of 5" in said
    assert "still paused sloppy: gold accuracy now 0% of 5" in said
    assert main(["list-gold", "--config", str(config_file)]) == 0
    assert "5 gold task(s), 0 disputed" in capsys.readouterr().out
    missing = tmp_path / "other.yaml"
    missing.write_text(yaml.safe_dump({"knowledge_base": {"url": f"sqlite:///{tmp_path / 'none.db'}"}}))
    assert main(["list-gold", "--config", str(missing)]) == 2  # no knowledge base there: none made
    assert not (tmp_path / "none.db").exists()


def test_the_operator_page_shows_disputed_gold_and_retires_it(tmp_path: Path) -> None:
    from hgen.hub.testing.web import add_people, csrf_token_of, logged_in, web_hub

    gold = {"share": 0.5, "min_answers": 5, "pause_below": 0.9}
    with web_hub(tmp_path, gold=gold) as hub:
        add_people(hub, annotators=("ann",), operators=("op",))
        _, wrong = people_answer(hub.service)
        operator = logged_in(hub, "op")
        page = operator.get("/operator").get_data(as_text=True)
        assert 'id="gold-list"' in page and page.count("· disputed") == 1
        assert page.index(wrong) < min(page.index(g) for g in gold_ids(hub.service) if g != wrong)
        image = operator.get(f"/operator/gold/{wrong}/image")
        assert image.status_code == 200 and image.mimetype == "image/png"
        assert image.get_data() == png_image(seed=99).data
        assert operator.get("/operator/gold/nope/image").status_code == 400
        token = csrf_token_of(page)
        assert operator.post("/operator/gold/retire", data={"csrf_token": token, "sample_id": "nope"}).status_code == 303
        assert "not a gold task: &#39;nope&#39;" in operator.get("/operator").get_data(as_text=True)
        assert page.count(">keep paused</button>") == 4  # the three careful people and the sloppy one
        kept = operator.post("/operator/annotator", data={"csrf_token": token, "annotator": "c1", "action": "pause"})
        assert kept.status_code == 303 and hub.service.gold.paused_reason("c1") == "paused by an operator"
        done = operator.post("/operator/gold/retire", data={"csrf_token": token, "sample_id": wrong})
        assert done.status_code == 303
        after = operator.get("/operator").get_data(as_text=True)
        assert f"gold task {wrong} retired; resumed c2, c3; still paused by gold: sloppy" in after
        assert hub.service.gold.paused_reason("c1") == "paused by an operator"
        assert "· disputed" not in after
        annotator = logged_in(hub, "ann")
        ann_token = csrf_token_of(annotator.get("/annotate").get_data(as_text=True))
        refused = annotator.post("/operator/gold/retire", data={"csrf_token": ann_token, "sample_id": wrong})
        assert refused.status_code == 403
        assert annotator.get(f"/operator/gold/{wrong}/image").status_code == 403


def gold_ids(service: HubService) -> list[str]:
    with service.kb.session() as s:
        return [g.sample_id for g in gold_standings(s)]


def test_a_rule_pause_committing_while_a_retire_resumes_is_undone_not_left(pg_url: str) -> None:  # noqa: F811
    """PostgreSQL, two real transactions: the gold rule is pausing c1 (its row locked, the pause not committed yet)
    when a retire of the gold behind that pause runs. The retire's resume step waits for the lock, then sees the
    pause and undoes it. Before the row lock, the retire read who was paused first, missed c1, and c1 stayed paused
    by a gold that no longer existed."""
    import threading

    from sqlalchemy import create_engine, text

    from hgen.hub.config import GoldConfig
    from hgen.hub.gold import GOLD_PAUSE_REASON, lock_annotator
    from hgen.hub.kb.models import AnnotatorPause

    config = parse_hub_config({"devices": ["cam-1"], "knowledge_base": {"url": pg_url},
                               "gold": {"share": 0.5, "min_answers": 1000}})  # nobody paused while answering
    service = HubService(config, KnowledgeBase.open(pg_url))
    watcher = create_engine(pg_url)
    try:
        right = [service.gold.add(png_image(seed=s), RIGHT, config.num_classes, config.limits) for s in range(5)]
        wrong = service.gold.add(png_image(seed=99), WRONG_KNOWN, config.num_classes, config.limits)
        answer_gold(service, "c1", {**{r: RIGHT for r in right}, wrong: TRUE_OF_WRONG}, [*right, wrong])
        service.gold.config = GoldConfig(share=0.5, min_answers=5, pause_below=0.9)  # now 5 of 6 pauses c1
        outcome: list = []

        def run_retire() -> None:
            try:
                outcome.append(retire_gold(service.gold, [wrong]))
            except BaseException as exc:  # noqa: BLE001 (said by the assertion below)
                outcome.append(exc)

        retire = threading.Thread(target=run_retire)
        with service.kb.session() as pausing:  # the rule's pause, caught between its lock and its commit
            lock_annotator(pausing, "c1")
            pausing.add(AnnotatorPause(annotator_id="c1", reason=f"{GOLD_PAUSE_REASON} 83% on 6 gold tasks",
                                       paused_at=0.0))
            pausing.flush()
            retire.start()
            with watcher.connect() as db:  # until the retire's resume step waits for c1's row
                waiting = 0
                for _ in range(3000):
                    waiting = db.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                                              "'Lock' AND datname = current_database()")).scalar()
                    db.rollback()  # pg_stat_activity is a snapshot per transaction: the next poll reads afresh
                    if waiting or not retire.is_alive():
                        break
                    threading.Event().wait(0.01)  # polling the database for the waiter, not a blind sleep
                assert waiting == 1, f"the retire never waited for the pausing transaction: {outcome}"
        retire.join(60)
        (report,) = outcome
        assert report.retired == (wrong,) and [r.annotator_id for r in report.resumed] == ["c1"]
        assert service.gold.paused_reason("c1") is None
    finally:
        watcher.dispose()
        service.close()
