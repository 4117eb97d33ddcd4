"""docs/backends.md lists every registry of the source with what is registered now (tools/docs/backends.py)."""

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TOOL = ROOT / "tools" / "docs" / "backends.py"
SOURCE = ("compiler", "runtime", "edge_agent", "hub")
DEFINED = re.compile(r"^(\w+): Registry\[.*\] = Registry\(", re.MULTILINE)


def tool():
    spec = importlib.util.spec_from_file_location("backends_doc", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_registry_in_the_source_is_documented():
    """A registry added without a row here would be an extension point nobody can find."""
    found = {name for folder in SOURCE for path in (ROOT / folder).rglob("*.py")
             for name in DEFINED.findall(path.read_text())}
    listed = {target.partition(":")[2] for _, target in tool().REGISTRIES}
    assert found and found == listed, f"not documented: {sorted(found - listed)}; gone: {sorted(listed - found)}"


def test_backends_doc_is_up_to_date():
    assert tool().main(["--check"]) == 0, "docs/backends.md is stale: run `python tools/docs/backends.py`"
