"""Names from a field team's own data and config, followed through the product (a review acting as teams worldwide):

* a YOLO data.yaml's `names: [yes, no, NO, off, 007, null]` became the classes "True", "False", "False", "False",
  "7", "None" (YAML reads them as booleans, numbers and null): people answered on buttons reading "False", and
  Norway's `NO` and `no` became one name; names are now the text the file holds, and a blank or twice-listed name
  is refused;
* hub.yaml's `devices` and `retrain.models[].devices` took ids `hgen-hub add-device` refuses (`Kamera Süd`,
  `cam/1`): such a device could never be enrolled, found only when it never connected; `web.class_names` took
  one name twice (two buttons reading the same); the hub's device-id check let a trailing newline through;
* the agent took a device_id longer than the hub's 128 characters, refused only by the hub;
* `hgen lower --name "Kamera Süd"` lowered the whole model, then failed writing the manifest with a pattern.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.cli.main import main as hgen_main
from hgen.compiler.data.formats import scan
from hgen.compiler.errors import DatasetFormatError
from hgen.edge_agent.config import parse_agent_config
from hgen.edge_agent.errors import AgentConfigError
from hgen.hub.cli import main as hub_main
from hgen.hub.config import parse_hub_config
from hgen.hub.devices import DeviceCredentialError, check_device_id
from hgen.hub.errors import HubConfigError


def _yolo_set(root: Path, names_yaml: str) -> Path:
    (root / "images" / "train").mkdir(parents=True)
    (root / "labels" / "train").mkdir(parents=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root / "images" / "train" / "a.png")
    (root / "labels" / "train" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (root / "data.yaml").write_text(f"train: images/train\n{names_yaml}", encoding="utf-8")
    return root


def test_yolo_names_yaml_reads_as_booleans_numbers_or_null_keep_their_text(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "Prüfung 2026", 'names: [yes, no, NO, off, 007, 1.50, null, "猫", "<b>", "x,y"]\n')
    assert scan(root).labels == ("yes", "no", "NO", "off", "007", "1.50", "null", "猫", "<b>", "x,y")


def test_yolo_names_mapping_keeps_their_text_in_index_order(tmp_path: Path) -> None:
    root = _yolo_set(tmp_path / "set", "names:\n  1: Norway\n  0: yes\n  2: ~\n  3: Straße\n")
    assert scan(root).labels == ("yes", "Norway", "~", "Straße")


@pytest.mark.parametrize(("names", "said"), [("names: [a, '', b]\n", "class 1 of 'names' has no name"),
                                             ("names: [Café, b, Café]\n", "'Café' more than once")])
def test_yolo_names_blank_or_twice_are_refused_naming_the_file(tmp_path: Path, names: str, said: str) -> None:
    root = _yolo_set(tmp_path / "set", names)
    with pytest.raises(DatasetFormatError, match=said) as raised:
        scan(root)
    assert str(root / "data.yaml") in str(raised.value)


@pytest.mark.parametrize("where", ["devices", "model"])
def test_hub_config_refuses_device_ids_add_device_would_refuse(tmp_path: Path, where: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "hub ü" / "hub.yaml"
    path.parent.mkdir()
    if where == "devices":
        path.write_text('devices: ["cam-1", "Kamera Süd", "cam/1"]\n', encoding="utf-8")
    else:
        path.write_text('retrain:\n  models:\n    - {name: m, keras_model: m.keras, bundle: b, '
                        'devices: {"Kamera Süd": x86_64}}\n', encoding="utf-8")
    assert hub_main(["check-config", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Kamera Süd" in err and "device ids are 1-128 letters" in err and "Traceback" not in err
    assert ("retrain.models.0.devices" if where == "model" else "devices:") in err


@pytest.mark.parametrize(("names", "said"), [(["Café", "Cafe\u0301", "x"], "'Café' listed more than once"),
                                             (["a", " ", "b"], "class 1 has a blank name")])
def test_hub_web_class_names_twice_or_blank_are_refused_any_script_is_taken(names: list[str], said: str) -> None:
    taken = ["Café", "Straße", "猫", "عربي", "a b", "x,y", "it's", "<b>"]
    assert parse_hub_config({"web": {"class_names": taken}}).web.class_names == tuple(taken)
    assert parse_hub_config({"devices": ["cam-1", "Cam_2.north", "x" * 128]}).devices[2] == "x" * 128
    with pytest.raises(HubConfigError, match=said):
        parse_hub_config({"web": {"class_names": names}})


def test_the_hubs_device_id_check_refuses_a_trailing_newline() -> None:
    assert check_device_id("cam-1") == "cam-1"
    for device_id in ("cam-1\n", "Kamera Süd", "x" * 129):
        with pytest.raises(DeviceCredentialError, match="device ids are"):
            check_device_id(device_id)


def test_agent_device_id_longer_than_the_hub_takes_is_refused_by_key() -> None:
    base = {"bundle": {"path": "b.hgb", "public_key": "k.pub"}, "source": {"kind": "images", "uri": "/tmp"}}
    assert parse_agent_config({"device_id": "c" * 128, **base}).device_id == "c" * 128
    with pytest.raises(AgentConfigError, match="device_id"):
        parse_agent_config({"device_id": "c" * 129, **base})


def test_lower_refuses_a_model_name_a_bundle_cannot_carry_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "Prüfung 2026" / "model.keras"
    model.parent.mkdir()
    model.write_bytes(b"never read: the name is refused first")
    out = tmp_path / "bundle"
    code = hgen_main(["lower", str(model), "--out", str(out), "--key", str(tmp_path / "absent.key"),
                      "--name", "Kamera Süd"])
    err = capsys.readouterr().err
    assert code == 2 and "--name 'Kamera Süd' cannot name a model" in err and "'Kamera-Sud'" in err
    assert not out.exists()


def test_agent_mqtt_sink_topic_with_a_wildcard_is_refused_by_key_any_script_is_taken() -> None:
    """paho refuses a wildcard topic at every publish: each result failed and was kept for re-delivery."""
    base = {"device_id": "cam-1", "bundle": {"path": "b.hgb", "public_key": "k.pub"},
            "source": {"kind": "images", "uri": "/tmp"}}
    sink = {"kind": "mqtt", "url": "mqtt://127.0.0.1:1883"}
    taken = parse_agent_config({**base, "sinks": [{**sink, "topic": "Ergebnisse/Kamera Süd/猫"}]})
    assert taken.sinks[0].topic == "Ergebnisse/Kamera Süd/猫"
    for topic in ("Ergebnisse/Kamera Süd/#", "results/+/cam-1"):
        with pytest.raises(AgentConfigError, match=r"sinks\.0\.mqtt\.topic.*wildcards"):
            parse_agent_config({**base, "sinks": [{**sink, "topic": topic}]})


def test_agent_check_prints_paths_as_people_named_them(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`hgen-agent check` printed "/data/Pr\\u00fcfung 2026/\\u732b": JSON, but not what anyone can read."""
    from hgen.edge_agent.cli import main as agent_main
    from hgen.edge_agent.testing import make_keys, null_bundle

    keys = make_keys(tmp_path / "Schlüssel")
    bundle = null_bundle(tmp_path / "Modelle ü" / "bundle", keys)
    frames = tmp_path / "Prüfung 2026" / "猫"
    frames.mkdir(parents=True)
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(frames / "a.png")
    config = tmp_path / "agent ü" / "agent.yaml"
    config.parent.mkdir()
    config.write_text(f"device_id: cam-1\nbundle: {{path: '{bundle}', public_key: '{keys.public_pem}'}}\n"
                      f"source: {{kind: images, uri: '{frames}'}}\n", encoding="utf-8")
    assert agent_main(["check", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert f"images {frames}" in printed and str(config.parent / "outbox.sqlite") in printed


def test_class_names_that_read_the_same_are_refused_by_every_format_and_by_lower(tmp_path: Path,
                                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """hub.yaml refused "cat" twice, but a folder data set's "cat" and "cat " (or a café written composed and
    decomposed) made two classes nobody could tell apart, and so did `hgen lower --labels "cat,cat "`."""
    from PIL import Image

    from hgen.compiler.data import load_dataset
    from hgen.compiler.errors import DatasetFormatError
    from hgen.runtime.class_names import unclear_class_names

    assert unclear_class_names(["Café", "Cafe\u0301"]) is not None and unclear_class_names(["cat", "Cat"]) is None
    for folder in ("cat", "cat "):
        (tmp_path / "data" / folder).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "data" / folder / f"{i}.png")
    with pytest.raises(DatasetFormatError, match="'cat' listed more than once"):
        load_dataset(f"folder:{tmp_path / 'data'}")
    (tmp_path / "m.keras").write_bytes(b"never read: the labels are refused first")
    code = hgen_main(["lower", str(tmp_path / "m.keras"), "--out", str(tmp_path / "b"), "--key", "k",
                      "--labels", "cat,cat ,dog"])
    assert code == 2 and "--labels: 'cat' listed more than once" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    code = hgen_main(["lower", str(tmp_path / "m.keras"), "--out", str(tmp_path / "b"), "--key", "k",
                      "--labels", f"@{tmp_path / 'empty.txt'}"])
    assert code == 2 and "no label in it" in capsys.readouterr().err
