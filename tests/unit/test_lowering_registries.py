"""The compiler's lowering backends are registered by name, one module each, like the device's engines: a bundle's
engines are the ones a device can open, the phone's runtimes are what the bundle writer offers, and an unknown name
is a typed error that lists the choices, before any lowering work."""

from __future__ import annotations

from typing import get_args

import pytest

from hgen.compiler.bundle.engines import BUNDLE_ENGINES
from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.lowering.web import WEB_RUNTIMES
from hgen.runtime.bundle.manifest import EngineEntry, InputSpec, Manifest, Quantization, WebModelEntry
from hgen.runtime.engines import ENGINES, engine_names


def test_every_bundle_engine_is_an_engine_the_device_opens() -> None:
    assert BUNDLE_ENGINES.names() == ["litert", "tvm"]
    assert set(BUNDLE_ENGINES.names()) <= set(engine_names())


@pytest.mark.parametrize("engines", [["litert", "onnx"], [], ["tvm", "tvm"]])
def test_engines_must_be_distinct_known_names(engines: list[str]) -> None:
    with pytest.raises(InvalidArgumentError, match=r"distinct names from \('litert', 'tvm'\)"):
        BUNDLE_ENGINES.check_choice(engines)


def test_web_runtimes_are_registered_and_checked() -> None:
    assert WEB_RUNTIMES.names() == ["litert-js", "onnxruntime-web"]
    WEB_RUNTIMES.check_choice(["onnxruntime-web", "litert-js"], allow_none=True)
    WEB_RUNTIMES.check_choice([], allow_none=True)  # a bundle no phone will use
    with pytest.raises(InvalidArgumentError, match="webgpu"):
        WEB_RUNTIMES.check_choice(["webgpu"], allow_none=True)
    # the signed manifest's schema names the same runtimes the writer can lower to (a new one is added to both)
    assert sorted(get_args(WebModelEntry.model_fields["runtime"].annotation)) == WEB_RUNTIMES.names()


def _manifest(entry: EngineEntry) -> Manifest:
    return Manifest(model={"name": "m", "version": "1.0.0"}, created="2026-12-06T00:00:00+00:00", kind="cnn",
                    target="x86_64", engines=[entry], input=InputSpec(shape=(1, 8, 8, 1)), output_shape=(1, 3),
                    labels=["a", "b", "c"], tau=0.5, temperature=1.0, **{"lambda": 0.5})


def test_only_an_engine_whose_file_lacks_shapes_takes_them_from_the_signed_manifest() -> None:
    quant = Quantization(scale=0.5, zero_point=-3)
    entry = EngineEntry(name="tvm", file="model.so", sha256="0" * 64, size=1, precision="int8",
                        format="shared-library", machine="x86_64", input_quantization=quant,
                        output_quantization=quant)
    manifest = _manifest(entry)
    tvm = ENGINES.get("tvm").manifest_config(entry, manifest)
    assert tvm["input_shape"] == (1, 8, 8, 1) and tvm["output_shape"] == (1, 3) and tvm["precision"] == "int8"
    assert tvm["input_quantization"] == {"scale": 0.5, "zero_point": -3}
    assert ENGINES.get("litert").manifest_config(entry, manifest) == {}
