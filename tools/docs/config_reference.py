"""Regenerate the configuration reference (docs/configuration.md) from the strict config models.

`python tools/docs/config_reference.py` rewrites the part of docs/configuration.md between the markers;
`--check` exits 1 when docs/configuration.md is out of date (the unit test does the same).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from hgen.runtime.config import reference_markdown, regenerate

TARGET = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
START, END = "<!-- config-reference:start -->", "<!-- config-reference:end -->"
SECTIONS = (
    ("`hgen-compile --config compile.yaml` (`hgen.compiler.compile.CompileConfig`; flags override the file)",
     "hgen.compiler.compile:CompileConfig"),
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/configuration.md is stale")
    return regenerate(TARGET, (START, END), render, check=parser.parse_args(argv).check)


if __name__ == "__main__":
    sys.exit(main())
