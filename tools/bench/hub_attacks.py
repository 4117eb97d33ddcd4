"""Hub attack benchmark (issue 16): the attacks an attacker tried against a running hub, replayed x outcome.

Each attack runs against a real hub (web UI through Flask's client, gRPC on loopback, SQLite) and reports
whether the hub was still vulnerable, how many requests it took and how many got a 5xx. The bombs run in a
fresh process (hgen.hub.testing.bombs) whose peak RSS over idle is recorded per bomb. Writes
tools/bench/results/hub_attacks.json and .md with {"attempts", "vulnerable", "server_errors",
"bomb_rss_growth_mb"} at the top level.

    .venv/bin/python tools/bench/hub_attacks.py
"""

from __future__ import annotations

import argparse
import io
import re
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchlib import markdown_table, write_results
from flask.testing import FlaskClient

from hgen.hub.app import HubApp
from hgen.hub.kb.models import AnnotatorPause, AnswerRow, Assignment, GoldItem, Sample
from hgen.hub.testing.bombs import measure
from hgen.hub.testing.samples import make_request, make_sample, png_image
from hgen.hub.testing.web import PASSWORD, add_people, web_hub
from hgen.hub.web.auth import Accounts
from hgen.protos import hub_pb2

DEVICE = "cam-1"
BOMB_LIMIT_MB = 64.0


@dataclass
class Probe:
    """A browser against one hub: counts requests and 5xx answers."""

    hub: HubApp
    base_url: str = "http://localhost"  # the Host the browser sends (an attacker may forge it)
    attempts: int = 0
    server_errors: int = 0
    client: FlaskClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = self.hub.web.app.test_client()

    def send(self, method: str, path: str, **kwargs: Any) -> Any:
        response = getattr(self.client, method)(path, base_url=self.base_url, **kwargs)
        self.attempts += 1
        self.server_errors += response.status_code >= 500
        return response

    def token(self, page: str) -> str:
        found = re.search(r'name="csrf_token" value="([^"]+)"', self.send("get", page).get_data(as_text=True))
        return found.group(1) if found else "none"

    def post(self, path: str, data: dict[str, Any], page: str, **kwargs: Any) -> int:
        return self.send("post", path, data={**data, "csrf_token": self.token(page)}, **kwargs).status_code

    def login(self, user: str, password: str = PASSWORD) -> int:
        return self.post("/login", {"username": user, "password": password}, "/login")


@dataclass(frozen=True)
class Outcome:
    vulnerable: bool
    outcome: str


@contextmanager
def hub_for(workdir: Path, **sections: Any) -> Iterator[HubApp]:
    folder = Path(tempfile.mkdtemp(dir=workdir))
    with web_hub(folder, **sections) as app:
        add_people(app, annotators=("ann", "bob"), operators=("op", "op2"))
        yield app


def browser(hub: HubApp, user: str | None, probes: list[Probe]) -> Probe:
    probe = Probe(hub)
    probes.append(probe)
    if user is not None:
        probe.login(user)
    return probe


def task_of(probe: Probe) -> str:
    found = re.search(r'data-task="([^"]+)"', probe.send("get", "/annotate").get_data(as_text=True))
    return found.group(1) if found else ""


# --- the eight findings --------------------------------------------------------------------------------------


def session_after_logout(hub: HubApp, probes: list[Probe]) -> Outcome:
    op = browser(hub, "op", probes)
    thief = browser(hub, None, probes)
    thief.client.set_cookie("hgen_session", op.client.get_cookie("hgen_session").value)
    op.post("/logout", {}, "/operator")
    status = thief.send("get", "/operator").status_code
    return Outcome(status == 200, f"stolen cookie after logout: HTTP {status}")


def session_after_demotion(hub: HubApp, probes: list[Probe]) -> Outcome:
    op, op2 = browser(hub, "op", probes), browser(hub, "op2", probes)
    token = op.token("/operator")
    op2.post("/operator/invite", {"name": "op", "role": "annotator"}, "/operator")
    status = op.send("post", "/operator/invite", data={"name": "mallory", "role": "operator",
                                                       "csrf_token": token}).status_code
    Accounts(hub.service.kb).create("op", "operator", PASSWORD)  # restore for the next attacks
    return Outcome(status == 303, f"demoted operator's old session creates an invite: HTTP {status}")


def shared_address_lockout(hub: HubApp, probes: list[Probe]) -> Outcome:
    sprayer = browser(hub, None, probes)
    for i in range(50):
        sprayer.login(f"user{i}", "wrong password!")
    statuses = [browser(hub, None, probes).login(user) for user in ("ann", "bob")]
    return Outcome(any(s != 303 for s in statuses), f"50 names failed from one address, then real logins: {statuses}")


def poisoned_answer(hub: HubApp, probes: list[Probe]) -> Outcome:
    hub.service.submit(make_request(DEVICE, [make_sample(DEVICE)], m=1), "grpc")
    ann = browser(hub, "ann", probes)
    task = task_of(ann)
    status = ann.post(f"/task/{task}/answer", {"kind": "boxes", "shapes": '[{"x_min": 1, "y_min": 1, "x_max": 5, '
                                                                        '"y_max": 5, "class_id": 1}]'}, "/annotate")
    stored = hub.service.kb.count(AnswerRow, task_id=task)
    ann.post(f"/task/{task}/answer", {"release": "skip"}, "/annotate")
    return Outcome(status < 400 or stored > 0, f"kind=boxes on a classification task: HTTP {status}, stored {stored}")


def sweep_blocked(hub: HubApp, probes: list[Probe]) -> Outcome:
    samples = [make_sample(DEVICE) for _ in range(3)]
    hub.service.submit(make_request(DEVICE, samples, m=2, deadline_s=5.0), "grpc")
    deadline = time.time() + 5.0
    api = hub.service.annotators
    api.register("legacy")
    task = api.next_task("legacy")
    bad = hub_pb2.Answer(task_id=task.task_id, sample_id=task.sample_id, annotator_id="legacy", operations=1)
    bad.boxes.boxes.add(x_min=1, y_min=1, x_max=5, y_max=5)
    with hub.service.kb.session() as s:  # an answer stored by a hub from before the fix
        s.get(Assignment, task.task_id).status = "answered"
        s.add(AnswerRow(task_id=task.task_id, sample_id=task.sample_id, annotator_id="legacy", class_id=None,
                        payload=bad.SerializeToString(), latency_s=1.0, operations=1, simulated=False,
                        submitted_at=time.time()))
    time.sleep(max(0.0, deadline - time.time()) + 2.5)  # the hub's own sweep runs
    others = [s.sample_id for s in samples if s.sample_id != task.sample_id]
    closed = len(hub.service.kb.replies_for(others))
    aside = hub.service.kb.count(Sample, status="set_aside")
    return Outcome(closed < len(others) or aside != 1 or len(others) != 2,
                   f"poisoned sample set aside: {aside}; others closed: {closed}/{len(others)}")


def hostile_inputs(hub: HubApp, probes: list[Probe]) -> Outcome:
    hub.service.submit(make_request(DEVICE, [make_sample(DEVICE)], m=1), "grpc")
    ann, op = browser(hub, "bob", probes), browser(hub, "op", probes)
    task = task_of(ann)
    raw = hub_pb2.Image(format=hub_pb2.IMAGE_FORMAT_RAW_U8, data=bytes(8 * 8 * 2), height=8, width=8, channels=2)
    ingest = hub.service.submit(make_request(DEVICE, [make_sample(DEVICE, image=raw)], m=1), "grpc")
    before = (hub.service.kb.count(AnswerRow), hub.service.kb.count(GoldItem), hub.service.kb.count(AnnotatorPause))
    statuses = [ann.post(f"/task/{task}/answer", data, "/annotate") for data in (
        {"kind": "regions", "shapes": "[" * 100_000 + "]" * 100_000},
        {"kind": "class", "class_id": "9" * 5000}, {"kind": "boxes", "shapes": '[{"x_min": 1e999}]'},
        {"kind": "class", "class_id": "-1"}, {"kind": "class", "class_id": "999"})]
    statuses += [op.post("/operator/annotator", {"annotator": "nobody", "action": "pause"}, "/operator"),
                 op.post("/operator/gold", {"class_id": "999", "image": (io.BytesIO(png_image(16).data), "g.png")},
                         "/operator", content_type="multipart/form-data")]
    after = (hub.service.kb.count(AnswerRow), hub.service.kb.count(GoldItem), hub.service.kb.count(AnnotatorPause))
    refused_raw = not ingest.accepted
    ok = all(400 <= s < 500 for s in statuses) and before == after and refused_raw
    return Outcome(not ok, f"HTTP {sorted(set(statuses))}, knowledge base unchanged: {before == after}, "
                           f"2-channel raw refused at ingest: {refused_raw}")


def hoarding(workdir: Path, probes: list[Probe]) -> Outcome:
    with hub_for(workdir, tasks={"assignment_timeout_s": 1.0}) as hub:
        hub.service.submit(make_request(DEVICE, [make_sample(DEVICE) for _ in range(5)], m=1, deadline_s=3600),
                           "grpc")
        held = {task_of(browser(hub, "ann", probes)) for _ in range(5)}
        bob = browser(hub, "bob", probes)
        bob_tasks = {task_of(bob)}
        time.sleep(2.5)  # ann's task times out and goes back to the queue
        returned = hub.service.kb.count(Assignment, status="timed_out")
        return Outcome(len(held) > 1 or returned < 1, f"five sessions held {len(held)} task(s); timed out and "
                                                      f"returned: {returned}; bob got {len(bob_tasks)}")


# --- the low ones and those already refused ----------------------------------------------------------------


def low_findings(hub: HubApp, probes: list[Probe]) -> dict[str, Outcome]:
    op = browser(hub, "op", probes)
    op.post("/operator/gold", {"class_id": "1", "image": (io.BytesIO(png_image(16, seed=3).data), "g.png")},
            "/operator", content_type="multipart/form-data")
    fresh = browser(hub, None, probes)
    Accounts(hub.service.kb).create("gold-check", "annotator", PASSWORD)
    fresh.login("gold-check")
    page = fresh.send("get", "/annotate").get_data(as_text=True)
    forged = Probe(hub, base_url="http://evil.example.net")  # every request with a forged Host header
    probes.append(forged)
    forged.login("op")
    token = forged.token("/operator")
    created = forged.send("post", "/operator/invite", data={"name": "newbie", "csrf_token": token})
    link = re.search(r'id="invite-link">([^<]+)<', forged.send("get", "/operator").get_data(as_text=True))
    link_text = link.group(1) if link else ""
    if created.status_code != 303 or not link_text:
        return {"invite_link": Outcome(True, f"not measured: invite HTTP {created.status_code}")}
    guesses = 'id="guesses"' in page
    return {"gold_task_recognisable": Outcome(not guesses, f"gold page shows the model's guesses: {guesses}"),
            "invite_link_from_host_header": Outcome("evil.example.net" in link_text,
                                                    f"link: {link_text.split('#')[0]}#token=..."),
            "invite_token_in_logged_url": Outcome("token=" in created.headers.get("Location", "") or "?token=" in
                                                  link_text, f"redirect: {created.headers.get('Location', '')}, "
                                                             "token only after '#' (never sent to a server)")}


def already_refused(hub: HubApp, probes: list[Probe]) -> dict[str, Outcome]:
    names = ["<script>alert(1)</script>"]
    ann, bob = browser(hub, "ann", probes), browser(hub, "bob", probes)
    hub.service.submit(make_request(DEVICE, [make_sample(DEVICE), make_sample(DEVICE)], m=1), "grpc")
    task = task_of(ann)
    cross = bob.post(f"/task/{task}/answer", {"kind": "class", "class_id": "1"}, "/annotate")
    image = bob.send("get", f"/task/{task}/image").status_code
    csrf = ann.send("post", f"/task/{task}/answer", data={"kind": "class", "class_id": "1"}).status_code
    traversal = ann.send("get", "/static/..%2F..%2Fweb%2Fapp.py").status_code
    big = ann.post("/login", {"username": "x" * (9 << 20)}, "/login")
    unknown, known = (browser(hub, None, probes).send("post", "/login", data={"username": u, "password": "nope"})
                      for u in ("nobody-here", "ann"))
    xss = Accounts(hub.service.kb)
    try:
        xss.create(names[0], "annotator", PASSWORD)
        stored_xss = True
    except Exception:  # noqa: BLE001 (refused names are the point)
        stored_xss = False
    return {"cross_user_answer": Outcome(cross != 403 or image != 403, f"answer HTTP {cross}, image HTTP {image}"),
            "csrf_missing_token": Outcome(csrf != 403, f"HTTP {csrf}"),
            "path_traversal_static": Outcome(traversal == 200, f"HTTP {traversal}"),
            "oversize_request": Outcome(big < 400, f"HTTP {big}"),
            "user_enumeration": Outcome(unknown.get_data() != known.get_data(), "same page for unknown and known"),
            "stored_xss_name": Outcome(stored_xss, "script tag refused as a user name")}


def run(workdir: Path) -> dict[str, Any]:
    probes: list[Probe] = []
    rows: dict[str, Outcome] = {}
    with hub_for(workdir, web={"login_global_budget": 20, "login_slow_s": 0.01,
                               "public_url": "https://hub.example.org"}) as hub:
        for attack in (sweep_blocked, session_after_logout, session_after_demotion, shared_address_lockout,
                       poisoned_answer, hostile_inputs):  # sweep first: its poisoned task must be one of its samples
            rows[attack.__name__] = attack(hub, probes)
        rows.update(low_findings(hub, probes))
        rows.update(already_refused(hub, probes))
    rows["task_hoarding"] = hoarding(workdir, probes)
    bombs = measure(workdir / "bombs")["bombs"]
    for name, bomb in bombs.items():
        rows[f"bomb_{name}"] = Outcome(bomb["rss_growth_mb"] > BOMB_LIMIT_MB or "413" not in bomb["outcome"]
                                       and "TOO_MANY_PIXELS" not in bomb["outcome"],
                                       f"{bomb['outcome']}, peak RSS +{bomb['rss_growth_mb']:.1f} MB")
    attempts = sum(p.attempts for p in probes) + len(bombs)
    return {"attempts": attempts, "vulnerable": sum(o.vulnerable for o in rows.values()),
            "server_errors": sum(p.server_errors for p in probes),
            "bomb_rss_growth_mb": round(max(b["rss_growth_mb"] for b in bombs.values()), 2),
            "bomb_rss_limit_mb": BOMB_LIMIT_MB,
            "attacks": {name: {"vulnerable": o.vulnerable, "outcome": o.outcome} for name, o in rows.items()},
            "bombs": bombs}


def report(data: dict[str, Any]) -> str:
    rows = [{"attack": name, "vulnerable": "yes" if a["vulnerable"] else "no", "outcome": a["outcome"]}
            for name, a in data["attacks"].items()]
    return "\n".join([
        "# Hub attacks (issue 16)", "",
        f"{data['attempts']} requests, {data['vulnerable']} attacks still working, {data['server_errors']} "
        f"server errors; largest peak-RSS growth under a 30000x30000 bomb: {data['bomb_rss_growth_mb']} MB "
        f"(target <= {data['bomb_rss_limit_mb']:.0f} MB).", "",
        markdown_table(rows, ["attack", "vulnerable", "outcome"]), "",
        "Regenerate: `.venv/bin/python tools/bench/hub_attacks.py`."])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        data = run(Path(tmp))
    json_path, md_path = write_results("hub_attacks", data, report(data))
    print(f"{data['vulnerable']} vulnerable, {data['server_errors']} server errors, bombs +"
          f"{data['bomb_rss_growth_mb']} MB -> {json_path}, {md_path}")
    return 0 if data["vulnerable"] == 0 and data["server_errors"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
