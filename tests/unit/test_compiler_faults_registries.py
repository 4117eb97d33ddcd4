"""The CLIs and the compile read names from the registries, not from hand lists: a data format is a detection one by
its `task`, the help lists every registered target/device/strategy/engine/format, the detection compile's default
detector is the one marked on its config type (not the first listed) and `--weights` is checked by the model's own
options; `hgen --help` still imports no TensorFlow."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.bundle.engines import BUNDLE_ENGINES
from hgen.compiler.cli.compile import add_arguments as add_compile_arguments
from hgen.compiler.cli.compile import config_from
from hgen.compiler.cli.data import add_arguments as add_data_arguments
from hgen.compiler.cli.lower import add_lower_arguments
from hgen.compiler.cli.main import main
from hgen.compiler.compile import CompileConfig, compile_config
from hgen.compiler.compile_detect import default_detector, model_named
from hgen.compiler.data.formats import FORMATS
from hgen.compiler.data.formats.coco import CocoFormat
from hgen.compiler.errors import CompilerError, InvalidArgumentError
from hgen.compiler.lowering.targets import TARGETS
from hgen.compiler.models import model_names
from hgen.compiler.models.detection_training import DETECTOR_TRAINING
from hgen.compiler.search.devices import DEVICES
from hgen.compiler.search.strategies import STRATEGIES


def _help(add: object) -> str:
    parser = argparse.ArgumentParser(prog="x", formatter_class=lambda prog: argparse.HelpFormatter(prog, width=400))
    add(parser)  # type: ignore[operator]
    return parser.format_help()


def _option_help(text: str, option: str) -> str:
    return next(line for line in text.splitlines() if line.strip().startswith(option))


def test_lower_help_lists_every_target_and_engine() -> None:
    text = _help(add_lower_arguments)
    assert "x86_64-native" in TARGETS.names()
    assert all(name in _option_help(text, "--target") for name in TARGETS.names())
    assert all(name in _option_help(text, "--engines") for name in BUNDLE_ENGINES.names())


def test_compile_help_and_titles_list_the_registries() -> None:
    text = _help(add_compile_arguments)
    for option, registry in (("--device", DEVICES), ("--strategy", STRATEGIES), ("--engines", BUNDLE_ENGINES)):
        assert all(name in _option_help(text, option) for name in registry.names()), option
    assert all(name in _option_help(text, "--model") for name in model_names())
    for field, registry in (("device", DEVICES), ("strategy", STRATEGIES), ("engines", BUNDLE_ENGINES)):
        assert CompileConfig.model_fields[field].title.endswith(", ".join(registry.names())), field


def test_data_help_lists_every_format() -> None:
    assert all(name in _option_help(_help(add_data_arguments), "--format") for name in FORMATS.names())


def test_help_imports_no_tensorflow() -> None:
    code = ("import sys; from hgen.compiler.cli.main import build_parser; build_parser().format_help(); "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tvm') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert result.stdout.strip() == "[]"


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_compile_arguments(parser)
    return parser.parse_args(list(argv))


def test_weights_are_checked_by_the_model_options_not_a_hand_list() -> None:
    with pytest.raises(InvalidArgumentError, match="weights"):
        config_from(_parse("--model", "mobilenet_v2", "--weights", "imagenet21k"))
    assert config_from(_parse("--model", "mobilenet_v2", "--weights", "imagenet")).model_options["weights"] == "imagenet"


def test_the_cli_leaves_the_model_unset_unless_given() -> None:
    assert "model" not in config_from(_parse()).model_fields_set
    assert not model_named(config_from(_parse()))
    assert model_named(config_from(_parse("--model", "two_stage_detector")))
    # a caller forwarding the classification default unchanged (the demo) still gets the default detector
    assert not model_named(compile_config(model=CompileConfig.model_fields["model"].default))


def test_every_plain_setting_has_its_flag_and_a_flag_reaches_its_setting() -> None:
    """The CLI kept a hand list of the settings taken from flags: a new setting could be missed by it."""
    from hgen.compiler.cli.compile import plain_settings

    dests = vars(_parse())
    assert set(plain_settings()) <= set(dests), set(plain_settings()) - set(dests)
    assert config_from(_parse("--episodes", "7", "--seed", "11")).model_dump(include={"episodes", "seed"}) == \
        {"episodes": 7, "seed": 11}


def test_the_default_detector_is_the_marked_one_wherever_it_is_listed() -> None:
    detectors = [n for kind in DETECTOR_TRAINING.names() for n in model_names(kind)]
    assert default_detector(detectors) == "grid_detector"
    assert default_detector(list(reversed(detectors))) == "grid_detector"
    with pytest.raises(CompilerError, match="found none"):
        default_detector([n for n in detectors if n != "grid_detector"])


class _BoxesFormat(CocoFormat):
    """a COCO file under another name: a detection format the CLI has never heard of"""

    name = "boxes"


def test_data_routes_a_format_by_its_task_not_its_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))
    FORMATS.names()  # discover the built-in formats before adding one for this test only
    monkeypatch.setitem(FORMATS._items, "boxes", _BoxesFormat())
    images, annotations = [], []
    for i in range(6):
        (tmp_path / "images").mkdir(exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 30 * i, np.uint8)).save(tmp_path / "images" / f"im{i}.png")
        images.append({"id": i, "file_name": f"im{i}.png", "width": 40, "height": 40})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [5, 5, 20, 20]})
    path = tmp_path / "scene.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations,
                                "categories": [{"id": 1, "name": "owl"}]}))
    assert main(["data", "--format", "boxes", "--size", "32", f"{path}?shares=0.5,0.25,0.25"]) == 0
    assert "classes   owl" in capsys.readouterr().out
