"""Regenerate docs/backends.md: every registry of backends, where its plugins live and what is registered now.

Extension points are the registries (`hgen.runtime.registry.Registry`): adding a backend is adding a file to the
registry's plugin package. `python tools/docs/backends.py` rewrites the table between the markers; `--check` exits 1
when it is stale (a unit test does the same, and another fails when a registry in the source is missing here).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from hgen.runtime.config import regenerate

TARGET = Path(__file__).resolve().parents[2] / "docs" / "backends.md"
START, END = "<!-- backends:start -->", "<!-- backends:end -->"
# (part of the product, "module:VARIABLE") of every registry, in the order a reader meets them.
REGISTRIES = (
    ("compiler", "hgen.compiler.cli:VERBS"),
    ("compiler", "hgen.compiler.data.builtins:BUILTINS"),
    ("compiler", "hgen.compiler.data.formats:FORMATS"),
    ("compiler", "hgen.compiler.data.challenges:VARIANTS"),
    ("compiler", "hgen.compiler.models:MODELS"),
    ("compiler", "hgen.compiler.models.detection_training:DETECTOR_TRAINING"),
    ("compiler", "hgen.compiler.ops.base:OPERATORS"),
    ("compiler", "hgen.compiler.search.strategies:STRATEGIES"),
    ("compiler", "hgen.compiler.search.devices:DEVICES"),
    ("compiler", "hgen.compiler.metrics.costs:LAYER_COSTS"),
    ("compiler", "hgen.compiler.lowering.targets:TARGETS"),
    ("compiler", "hgen.compiler.bundle.engines:BUNDLE_ENGINES"),
    ("compiler", "hgen.compiler.lowering.web:WEB_RUNTIMES"),
    ("runtime", "hgen.runtime.hdnn:KINDS"),
    ("runtime", "hgen.runtime.engines.base:ENGINES"),
    ("device agent", "hgen.edge_agent.sources.base:SOURCES"),
    ("device agent", "hgen.edge_agent.kinds:ADAPTERS"),
    ("device agent", "hgen.edge_agent.transports.base:TRANSPORTS"),
    ("device agent", "hgen.edge_agent.sinks.base:SINKS"),
    ("device agent", "hgen.edge_agent.adapt.power:POWER_SOURCES"),
    ("hub", "hgen.hub.transports:HUB_TRANSPORTS"),
    ("hub", "hgen.hub.aggregators:AGGREGATORS"),
    ("hub", "hgen.hub.web.views:VIEWS"),
    ("hub", "hgen.hub.retrain.kinds:RETRAIN_KINDS"),
    ("hub", "hgen.hub.export:EXPORTERS"),
)


def load(target: str) -> object:
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def _folder(package: str) -> str:
    """`hgen.hub.aggregators` -> `hub/aggregators/` (the source folders map to hgen.<folder>)."""
    return "/".join(package.split(".")[1:]) + "/"


def render() -> str:
    rows = ["| part | registry | what it holds | add one in | registered now |", "|---|---|---|---|---|"]
    for part, target in REGISTRIES:
        registry = load(target)
        module, _, name = target.partition(":")
        package = getattr(registry, "package")
        where = f"`{_folder(package)}<name>.py`" if package else f"where it is defined (`{module}`)"
        names = ", ".join(f"`{n}`" for n in registry.names())  # type: ignore[attr-defined]
        rows.append(f"| {part} | `{name}` | {registry.kind} | {where} | {names} |")  # type: ignore[attr-defined]
    return "\n".join([START, "", *rows, "", END])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/backends.md is stale")
    return regenerate(TARGET, (START, END), render, check=parser.parse_args(argv).check)


if __name__ == "__main__":
    sys.exit(main())
