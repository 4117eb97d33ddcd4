import importlib
import sys

import pytest
from pydantic import Field

from hgen.runtime.config import StrictModel, load_config_file, parse_config
from hgen.runtime.errors import ConfigError, UnknownChoiceError
from hgen.runtime.registry import Registry


def test_registry_lists_valid_choices_on_unknown_name():
    registry: Registry[int] = Registry("engine")
    registry.add("litert", 1)
    registry.add("tvm", 2)
    with pytest.raises(UnknownChoiceError, match="unknown engine 'onnx'; valid choices: litert, tvm"):
        registry.get("onnx")
    assert registry.get("tvm") == 2


def test_registry_refuses_a_second_backend_under_the_same_name():
    registry: Registry[int] = Registry("engine")
    registry.add("x", 1)
    with pytest.raises(ValueError):
        registry.add("x", 2)


def write_plugins(package) -> None:
    """A plugin package: `a` imports, `b` fails while the file `broken` is there (a missing optional package)."""
    package.mkdir()
    (package / "__init__.py").write_text("from hgen.runtime.registry import Registry\n"
                                         "REGISTRY = Registry('fake backend', package=__name__)\n")
    (package / "a.py").write_text("from hgen_fake_plugins import REGISTRY\nREGISTRY.add('a', 1)\n")
    (package / "b.py").write_text("import pathlib\nfrom hgen_fake_plugins import REGISTRY\n"
                                  "if pathlib.Path(__file__).with_name('broken').exists():\n"
                                  "    raise ImportError('plugin b needs a package that is not installed')\n"
                                  "REGISTRY.add('b', 2)\n")
    (package / "broken").touch()


def test_a_registry_discovers_its_plugins_on_first_use_and_again_after_a_failed_import(
        tmp_path, monkeypatch) -> None:
    """A plugin that failed to import (its package installed since) is found by the next use; before, the registry
    kept the partial list for the life of the process."""
    write_plugins(tmp_path / "hgen_fake_plugins")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = importlib.import_module("hgen_fake_plugins").REGISTRY
        assert "hgen_fake_plugins.a" not in sys.modules  # nothing imported until asked
        with pytest.raises(ImportError, match="not installed"):
            registry.names()
        (tmp_path / "hgen_fake_plugins" / "broken").unlink()
        assert registry.names() == ["a", "b"]
    finally:
        for name in ("hgen_fake_plugins", "hgen_fake_plugins.a", "hgen_fake_plugins.b"):
            sys.modules.pop(name, None)


class Inner(StrictModel):
    port: int = Field(1883, ge=1, le=65535, title="Port")


class Outer(StrictModel):
    name: str = Field(title="Name")
    inner: Inner = Field(default_factory=Inner, title="Inner")


def test_config_reports_every_problem_by_key_path():
    with pytest.raises(ConfigError) as info:
        parse_config(Outer, {"inner": {"port": 0, "colour": "red"}, "extra": 1})
    text = str(info.value)
    assert "name: Field required" in text
    assert "inner.port:" in text
    assert "inner.colour: unknown key" in text
    assert "extra: unknown key" in text


def test_config_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config_file(Outer, path)
    path.write_text("name: x\ninner: {port: 80}\n")
    assert load_config_file(Outer, path).inner.port == 80


def test_validate_names_the_kind_and_the_choices_with_a_fields_own_words() -> None:
    """The one check every config validator uses on a registered name: pydantic puts it under the key path."""
    from hgen.edge_agent.transports import TRANSPORTS

    assert TRANSPORTS.validate("grpc") == "grpc" and TRANSPORTS.validate("auto", also=("auto",)) == "auto"
    with pytest.raises(ValueError, match="unknown hub transport 'auto'; valid choices: grpc, mqtt"):
        TRANSPORTS.validate("auto")
    with pytest.raises(ValueError, match="unknown hub transport 'http'; valid choices: auto, grpc, mqtt"):
        TRANSPORTS.validate("http", also=("auto",))
