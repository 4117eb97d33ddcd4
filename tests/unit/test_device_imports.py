"""Device code must run with LiteRT only: importing it with TensorFlow and Keras blocked has to work."""

import subprocess
import sys
from pathlib import Path

import pytest

import hgen.runtime

RUNTIME = Path(hgen.runtime.__file__).parent
AGENT = RUNTIME.parent / "edge_agent"


def device_modules() -> list[str]:
    modules = []
    for package, folder in (("hgen.runtime", RUNTIME), ("hgen.edge_agent", AGENT)):
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            modules.append(".".join((package, *parts)))
    return modules


@pytest.mark.parametrize("module", device_modules())
def test_imports_with_tensorflow_blocked(module):
    code = (
        "import sys\n"
        "for name in ('tensorflow', 'keras', 'tf_keras'):\n"
        "    sys.modules[name] = None\n"
        f"import {module}\n"
        "assert 'tensorflow' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_check_would_catch_a_tensorflow_import():
    code = "import sys; sys.modules['tensorflow'] = None; import tensorflow"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
