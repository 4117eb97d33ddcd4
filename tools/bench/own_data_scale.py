"""Own data at scale (issue 14): 100,000 colour images at 96x96x3 through the decode-once cache, and a compile on all.

How the images are made: the 70,000 FashionMNIST images (Debian IDX files, train then test) are cycled to `--images`
items; every item goes through `hgen.compiler.data.synthetic.write_colour_folder(size=96, seed=0)` (one generator
for the whole set, so a repeated garment gets another background, tint, size and place) and is written as a JPEG
(quality 80-95) to WORK/<class>/<index>.jpg; the reader splits them (seeded, stratified, 70/15/15).

Each stage runs in its own subprocess (this script with `--child STAGE`), which reports its wall seconds and peak
RSS (getrusage ru_maxrss), with HGEN_CACHE pointing at a fresh cache folder:
- `decode`: `read_catalog` of the folder, an empty cache: every file decoded, resized and cached as uint8;
- `reread`: the same call again: the assembled set memory-mapped from the cache, nothing decoded;
- `compile`: `hgen-compile` of lenet5 (rpi4, 1 episode, 1 base epoch, 1 final epoch: few epochs, this measures
  memory and time, not accuracy) on every image (`--compile-limit N` caps each split). The splits stay uint8,
  memory-mapped from the cache (2.8 GB for 100,000 images), and become float32 one batch at a time
  (`hgen.compiler.data.lazy`); as float32 they would be 11.1 GB before training copies. Peak RSS counts the pages of
  the memory-mapped set the process touched (file-backed, shared with the page cache).

Run: .venv/bin/python tools/bench/own_data_scale.py [--images 100000] [--compile-limit N]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import markdown_table, write_results
from own_data import CLASS_NAMES, read_idx

SIZE = 96
TARGET_IMAGES = 100_000


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def make_images(work: Path, count: int) -> dict[str, Any]:
    """Write WORK/<class>/*.jpg unless WORK/done.json records the same recipe."""
    from hgen.compiler.data.synthetic import write_colour_folder

    recipe = {"source": "FashionMNIST train + test (Debian IDX files), cycled", "images": count, "size": SIZE,
              "seed": 0, "format": "JPEG quality 80-95", "generator": "synthetic.write_colour_folder"}
    marker = work / "done.json"
    if marker.is_file() and json.loads(marker.read_text()) == recipe:
        return recipe | {"write_seconds": json.loads(marker.read_text()).get("write_seconds")}
    shutil.rmtree(work, ignore_errors=True)
    x = np.concatenate([read_idx("train-images-idx3-ubyte.gz"), read_idx("t10k-images-idx3-ubyte.gz")])
    y = np.concatenate([read_idx("train-labels-idx1-ubyte.gz"), read_idx("t10k-labels-idx1-ubyte.gz")])
    index = np.arange(count) % len(x)
    start = time.perf_counter()
    write_colour_folder(work, x[index], y[index], CLASS_NAMES, size=SIZE, seed=0)
    seconds = time.perf_counter() - start
    marker.write_text(json.dumps(recipe))
    return recipe | {"write_seconds": round(seconds, 1)}


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def stage(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Run one stage in a child process; its JSON line on stdout."""
    env = dict(os.environ, HGEN_CACHE=str(Path(args.out).resolve() / "cache"))
    command = [sys.executable, __file__, "--child", name, "--work", str(work), "--out", args.out]
    if args.compile_limit is not None:
        command += ["--compile-limit", str(args.compile_limit)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"stage": name, "error": done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(name: str, work: Path, args: argparse.Namespace) -> int:
    start = time.perf_counter()
    out: dict[str, Any] = {"stage": name}
    if name in ("decode", "reread"):
        from hgen.compiler.data.formats import get_format, parse_format_config
        from hgen.compiler.data.images import ImageOptions
        from hgen.compiler.data.reader import read_catalog

        fmt = get_format("folder")
        catalog = fmt.scan(work, parse_format_config(fmt, {}))
        loaded = read_catalog(catalog, ImageOptions(size=SIZE), seed=0)
        report = loaded.report
        out |= {"files": report.files, "decoded": report.decoded, "cached": report.cached,
                "set_cached": report.set_cached, "unreadable": len(report.unreadable),
                "splits": {k: len(v.y) for k, v in loaded.splits.items()},
                "array_dtype": str(loaded.splits["train"].x.dtype)}
    else:
        from hgen.compiler.compile import compile_config, compile_hdnn

        config = compile_config(model="lenet5", dataset=f"folder:{work}?size={SIZE}", device="rpi4", episodes=1,
                                budget_minutes=2, base_epochs=1, final_epochs=1, finetune_samples=1000,
                                limit=args.compile_limit, out=str(Path(args.out) / "compile"),
                                demands={"accuracy": 0.5, "latency_ms": 1000, "storage_mb": 50, "energy_mj": 50,
                                         "labour": 0.05})
        summary = compile_hdnn(config, log).summary
        out |= {"limit_per_split": args.compile_limit or "all", "search_seconds": summary["search_seconds"],
                "wall_seconds_compile": summary.get("wall_seconds"),
                "test_accuracy_model_only": summary["final"]["accuracy_model_only"]}
    out |= {"seconds": round(time.perf_counter() - start, 1),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}
    print(json.dumps(out))
    return 0


def markdown(result: dict[str, Any]) -> str:
    m, r = result["machine"], result["recipe"]
    stages = result["stages"]
    table = markdown_table(stages, ["stage", "seconds", "peak_rss_mb", "files", "decoded", "set_cached",
                                    "limit_per_split", "error"])
    lines = [f"# Own data at scale: {r['images']:,} images at {SIZE}x{SIZE}x3 (issue 14)", "",
             (f"Machine: {m.get('cpu')}, {m.get('cores')} cores, no GPU, shared with other jobs; one run (no "
              "repeats: each stage takes minutes)."), "",
             "## How the images were made", "", __doc__.split("How the images are made: ")[1].split("\n\n")[0], "",
             (f"Writing them took {r['write_seconds']} s (not part of any stage below)." if r.get("write_seconds")
              is not None else "Writing them was not timed (the images came from an earlier run of this script)."),
             "",
             "## Stages (each its own process)", "", table, "",
             (f"- cache on disk after decoding: {result['cache_mb']:,.0f} MB (per-image items + the assembled set); "
              f"JPEG files: {result['jpeg_mb']:,.0f} MB"), ""]
    if result.get("notes"):
        lines += ["## Notes", "", *(f"- {note}" for note in result["notes"]), ""]
    lines += ["## Targets", "", *result["targets"]]
    return "\n".join(lines)


def targets(stages: list[dict[str, Any]], memory_gb: float, images: int) -> list[str]:
    by = {s["stage"]: s for s in stages}
    lines = []
    for name, what in (("decode", f"decode {images:,} images into the cache"), ("reread", "read them again")):
        s = by.get(name, {})
        if "error" in s or not s:
            lines.append(f"- {what}: **NOT measured** ({s.get('error', 'not run')})")
        else:
            ok = s["peak_rss_mb"] / 1024 < memory_gb
            verdict = ("reached" if ok else "NOT reached") if images >= TARGET_IMAGES else \
                f"NOT measured at {TARGET_IMAGES:,} (only {images:,} images)"
            lines.append(f"- {what} within the {memory_gb:.0f} GB machine (peak RSS {s['peak_rss_mb']:,} MB, "
                         f"{s['seconds']:.0f} s): **{verdict}**")
    s = by.get("compile")
    what = f"a compile on all {TARGET_IMAGES:,} images within the {memory_gb:.0f} GB machine"
    if s is None or "error" in s:
        lines.append(f"- {what}: **NOT measured** ({'not run (--skip-compile)' if s is None else s['error']})")
    elif s.get("limit_per_split") != "all" or images < TARGET_IMAGES:
        lines.append(f"- {what}: **NOT measured** (run on {s.get('limit_per_split')} images per split of {images:,}: "
                     f"peak RSS {s['peak_rss_mb']:,} MB, {s['seconds']:.0f} s)")
    else:
        ok = s["peak_rss_mb"] / 1024 < memory_gb
        lines.append(f"- {what} (peak RSS {s['peak_rss_mb']:,} MB, {s['seconds']:.0f} s, 1 base + 1 final epoch): "
                     f"**{'reached' if ok else 'NOT reached'}**")
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--work", default="build/bench/own_data_scale/data")
    parser.add_argument("--out", default="build/bench/own_data_scale")
    parser.add_argument("--compile-limit", type=int, default=None, help="cap each split of the compile (default: all)")
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--render-only", action="store_true", help="rewrite own_data_scale.md from its JSON")
    args = parser.parse_args()
    if args.render_only:  # e.g. after adding notes to the JSON
        from benchlib import RESULTS, machine

        result = json.loads((RESULTS / "own_data_scale.json").read_text())
        result.setdefault("machine", machine())
        write_results("own_data_scale", {k: v for k, v in result.items() if k != "machine"}, markdown(result))
        return 0
    work = Path(args.work).resolve()
    if args.child:
        return child(args.child, work, args)
    shutil.rmtree(Path(args.out) / "cache", ignore_errors=True)
    log(f"writing {args.images} images to {work}")
    recipe = make_images(work, args.images)
    stages = []
    for name in ("decode", "reread") + (() if args.skip_compile else ("compile",)):
        log(f"stage {name}")
        stages.append(stage(name, work, args))
        log(f"  {stages[-1]}")
    from benchlib import machine

    result = {"recipe": recipe, "stages": stages, "machine": machine(),
              "cache_mb": folder_bytes(Path(args.out) / "cache") / 1e6,
              "jpeg_mb": sum(p.stat().st_size for p in work.rglob("*.jpg")) / 1e6}
    memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    result["targets"] = targets(stages, memory_gb, args.images)
    write_results("own_data_scale", {k: v for k, v in result.items() if k != "machine"}, markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
