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
