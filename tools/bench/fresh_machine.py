"""The README's two commands on a fresh machine: purge, clone, `make demo`, `make test`, `make demo` again.

Run as root on a Debian 12 machine (it purges and reinstalls Debian packages):

    python3 tools/bench/fresh_machine.py --purge --shared ../shared

1. `--purge` removes the Debian packages of tools/setup/packages.txt's `test` group (what `make test` installs).
2. A new clone of this repository's HEAD in a temporary folder (no .venv, no build/), with `../shared` beside it
   only when `--shared` is given (the MNIST files; no Debian package ships them).
3. `make demo` (nothing installed but the venv: scikit-learn digits, gRPC; compiled clean, deployed into noise),
   then `make test` (installs the system packages, runs every test), then `make demo` again (FashionMNIST, MQTT
   through Mosquitto).
Writes tools/bench/results/fresh_machine.json and .md. Download caches (pip, npm, apt) are not cleared (say so when
quoting).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import git_commit  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "tools" / "bench" / "results"
SUMMARY = re.compile(r"(\d+) (passed|failed|skipped|errors?|xfailed|xpassed)")


def test_group_packages() -> list[str]:
    lines = (ROOT / "tools" / "setup" / "packages.txt").read_text().splitlines()
    return [line.split()[1].split("?")[0] for line in lines  # `package?command`: the package
            if line.strip() and not line.startswith("#") and line.split()[0] == "test"]


def run(command: list[str], cwd: Path, log: Path, ci: bool = False) -> tuple[int, float, str]:
    """Run with output teed to `log`; returns (exit code, seconds, output). `ci`: CI=true as .ci/run has it (a
    missing prerequisite then fails instead of skipping)."""
    start = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "HGEN_DATA", "VIRTUAL_ENV")}
    if ci:
        env["CI"] = "true"
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        handle.write(done.stdout)
    return done.returncode, time.perf_counter() - start, done.stdout


def pytest_counts(output: str) -> dict[str, int]:
    """Counts from pytest's closing line ("== 1 failed, 440 passed, 2 skipped in 400.1s ==")."""
    closing = [line for line in output.splitlines() if re.search(r"\d+ (passed|failed)", line) and " in " in line]
    counts = {"passed": 0, "failed": 0, "skipped": 0, "errors": 0}
    for number, word in SUMMARY.findall(closing[-1] if closing else ""):
        key = "errors" if word.startswith("error") else word
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def demo_dataset(clone: Path) -> dict[str, Any]:
    summary = clone / "build" / "demo" / "summary.json"
    if not summary.exists():
        return {"dataset": "", "field": None, "transport": ""}
    data = json.loads(summary.read_text())
    return {"dataset": data["dataset"], "field": data.get("field"), "field_accuracy": data.get("field_accuracy"),
            "transport": data["transport"],
            "demands_met": data.get("demands_met", {}), "evaluation_pool": data.get("evaluation_pool", {})}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--purge", action="store_true", help="purge the test group's Debian packages first")
    parser.add_argument("--shared", type=Path, default=None, help="the shared/ folder to put beside the clone")
    parser.add_argument("--keep", action="store_true", help="keep the clone")
    parser.add_argument("--ci", action="store_true", help="run `make test` with CI=true (skips fail)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hgen-fresh-"))
    logs = work / "logs"
    logs.mkdir()
    record: dict = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                    "debian": Path("/etc/debian_version").read_text().strip(), "commit": "", "steps": []}
    if args.purge:
        packages = test_group_packages()
        subprocess.run(["apt-get", "purge", "-y", "-qq", *packages], check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "autoremove", "-y", "-qq", "--purge"], check=True, stdout=subprocess.DEVNULL)
        record["purged"] = packages
    clone = work / "main"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(clone)], check=True)
    record["commit"] = git_commit(clone)
    for step, log_name in (("demo_digits", "demo1.log"), ("test", "test.log"), ("demo_fashion", "demo2.log")):
        if step == "test" and args.shared is not None:
            (work / "shared").symlink_to(args.shared.resolve())  # the MNIST files, as CI has them
        rc, seconds, output = run(["make", "test" if step == "test" else "demo"], clone, logs / log_name,
                                  ci=args.ci and step == "test")
        entry = {"step": step, "command": "make test" if step == "test" else "make demo", "rc": rc,
                 "seconds": round(seconds, 1), "tail": output.strip().splitlines()[-12:]}
        entry.update(pytest_counts(output) if step == "test" else demo_dataset(clone))
        record["steps"].append(entry)
        print(f"{step}: rc {rc} in {seconds:.0f} s", flush=True)
    steps = {s["step"]: s for s in record["steps"]}
    record.update({"demo_digits_rc": steps["demo_digits"]["rc"], "demo_fashion_rc": steps["demo_fashion"]["rc"],
                   "test_rc": steps["test"]["rc"], "passed": steps["test"]["passed"],
                   "failed": steps["test"]["failed"] + steps["test"]["errors"], "skipped": steps["test"]["skipped"],
                   "test_seconds": steps["test"]["seconds"],
                   "demo_seconds": {"digits": steps["demo_digits"]["seconds"],
                                    "fashion": steps["demo_fashion"]["seconds"]}})
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fresh_machine.json").write_text(json.dumps(record, indent=2) + "\n")
    (RESULTS / "fresh_machine.md").write_text(markdown(record, args))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    ok = record["demo_digits_rc"] == record["demo_fashion_rc"] == record["test_rc"] == 0
    return 0 if ok else 1


def demo_outcome(step: dict) -> str:
    pool = step.get("evaluation_pool", {})
    missed = [name for name, met in step.get("demands_met", {}).items() if not met]
    accuracy = "".join(f"; {row}: model only {pool[row]['model_only']:.3f}, fused {pool[row]['fused']:.3f}, "
                       f"sent to people {pool[row]['share_to_people']:.3f}"
                       for row in ("before", "after") if row in pool)
    field = f", deployed into a field with {step['field']}" if step.get("field") else ""
    on_field = step.get("field_accuracy")
    judged = (f"; on the field A >= {on_field['demand']} {'met' if on_field['met'] else 'NOT met'} (reported)"
              if on_field else "")
    return (f"{step['dataset']}{field} over {step['transport']}; the compile's demands "
            + (f"NOT met: {', '.join(missed)}" if missed else "all met") + judged
            + (f"; evaluation pool of {pool['images']} images{accuracy}" if pool else ""))


def markdown(record: dict, args: argparse.Namespace) -> str:
    rows = "\n".join(
        f"| {s['command']} | {s['rc']} | {s['seconds']:.0f} | "
        + (f"{s['passed']} passed, {s['failed']} failed, {s['errors']} errors, {s['skipped']} skipped"
           if s["step"] == "test" else demo_outcome(s)) + " |"
        for s in record["steps"])
    purged = ", ".join(record.get("purged", [])) or "nothing (run without --purge)"
    return f"""# Fresh machine: the README's two commands

Machine: {record['machine']}, Debian {record['debian']}; commit {record['commit']}; one run, as root.
Purged first: {purged}. Then a new clone (no `.venv`, no `build/`), `../shared` beside it only from `make test` on
({'given' if args.shared else 'not given'}; it holds the MNIST files). The download caches were kept (pip's, npm's and
apt's /var/cache/apt/archives), so installs took less time than on a machine that never downloaded them.
Annotators in the demos are SIMULATED.
`make test` ran with {'CI=true (as .ci/run: a missing prerequisite fails, never skips)' if args.ci else 'CI unset'}.

| command (in order) | exit code | seconds | outcome |
|---|---|---|---|
{rows}

Reproduce: `python3 tools/bench/fresh_machine.py --purge --shared ../shared{' --ci' if args.ci else ''}` (root; writes this
file).
"""


if __name__ == "__main__":
    sys.exit(main())
