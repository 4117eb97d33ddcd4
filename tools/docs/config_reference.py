"""Regenerate the configuration reference (docs/configuration.md) from the strict config models.

`python tools/docs/config_reference.py` rewrites the part of docs/configuration.md between the markers;
`--check` exits 1 when docs/configuration.md is out of date (the unit test does the same).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from hgen.runtime.config import reference_markdown

TARGET = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
SECTIONS = (
    ("`hgen-compile` settings (`hgen.compiler.compile.CompileConfig`)", "hgen.compiler.compile:CompileConfig"),
    ("`hgen-hub serve --config hub.yaml` (`hgen.hub.config.HubConfig`)", "hgen.hub.config:HubConfig"),
    ("`hgen-agent run --config agent.yaml` (`hgen.edge_agent.config.AgentConfig`)", "hgen.edge_agent.config:AgentConfig"),
    ("Engine `litert` options", "hgen.runtime.engines.litert:LiteRTConfig"),
    ("Engine `tvm` options", "hgen.runtime.engines.tvm:TVMConfig"),
)


def _load(target: str) -> type | None:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def _aggregator_sections() -> list[tuple[str, type]]:
    """Every aggregator that takes options, from the registry, so a new strategy's options cannot go undocumented."""
    try:
        from hgen.hub.aggregators import AGGREGATORS
    except ImportError:
        return []
    return [(f"Aggregator `{name}` options (`aggregator_options.{name}`)", strategy.Config)
            for name, strategy in AGGREGATORS.items() if strategy.Config.model_fields]


def render() -> str:
    parts = [START, ""]
    sections = [(title, _load(target)) for title, target in SECTIONS] + _aggregator_sections()
    for title, model in sections:
        if model is not None:
            parts += [f"### {title}", "", reference_markdown(model), ""]
    return "\n".join(parts + [END])


def updated(text: str) -> str:
    if START not in text or END not in text:
        raise SystemExit(f"docs/configuration.md lacks the markers {START} ... {END}")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    return head + render() + tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is out of date")
    args = parser.parse_args()
    current = TARGET.read_text()
    new = updated(current)
    if args.check:
        return 0 if new == current else 1
    TARGET.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
