"""A field team's own names through compile and the device: class folders named in any script ("Café", "猫",
"عربي", "x,y", "<b>" ...) under "/data/Prüfung 2026/", their own model file "Mein Modell ü.keras", an output folder
with spaces. The compile used the file's stem as the bundle's model name, searched, fine-tuned, then failed writing
the manifest ("model.name: String should match pattern", exit 2): a model name names files on devices, so the
bundle now gets a name made of the stem (`Mein-Modell-u`) and the compile says so."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hgen.compiler.cli.main import main

NAMES = ("Café", "Straße", "猫", "عربي", "a b", "x,y", "it's", "<b>")
CHEAP = ["--device", "host", "--accuracy", "0.3", "--latency-ms", "60000", "--episodes", "1", "--evaluations", "1",
         "--final-epochs", "1", "--finetune-samples", "100", "--allow-miss", "--engines", "litert"]


def _class_folders(root: Path) -> None:
    """8 classes x 24 images of 16x16: a bright patch whose place and colour are the class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(NAMES):
        (root / name).mkdir(parents=True)
        for i in range(24):
            image = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
            image[(c % 4) * 4:(c % 4) * 4 + 4, (c // 4) * 8:(c // 4) * 8 + 6, c % 3] = 230
            Image.fromarray(image).save(root / name / f"{i:03d}.png")


def _user_model(spec: str, path: Path) -> None:
    import keras

    from hgen.compiler.data import load_dataset

    data = load_dataset(spec, seed=0)
    keras.utils.set_random_seed(0)
    image = keras.Input(data.input_shape)
    hidden = keras.layers.Flatten()(keras.layers.Conv2D(8, 3, activation="relu")(image))
    model = keras.Model(image, keras.layers.Dense(len(NAMES))(hidden))
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(data.train.x, data.train.y, epochs=15, batch_size=16, verbose=0)
    model.save(path)


def test_own_model_file_and_class_names_in_any_script_compile_and_run_on_the_device(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("HGEN_CACHE", str(tmp_path / "cache"))
    data = tmp_path / "data" / "Prüfung 2026"
    _class_folders(data)
    spec = f"{data}?size=16"
    model = data.parent / "Mein Modell ü.keras"
    _user_model(spec, model)
    out = tmp_path / "out dir" / "Ausgabe ü"
    assert main(["compile", "--model", str(model), "--dataset", spec, *CHEAP, "--out", str(out)]) == 0
    said = capsys.readouterr()
    assert "model name 'Mein-Modell-u'" in said.out + said.err
    with tarfile.open(out / "bundle.hgb") as bundle:
        manifest = json.load(bundle.extractfile("manifest.json"))
    assert manifest["model"]["name"] == "Mein-Modell-u" and tuple(manifest["labels"]) == tuple(sorted(NAMES))
    assert json.loads((out / "summary.json").read_text())["model"] == "Mein-Modell-u"

    from hgen.edge_agent.cli import main as agent_main

    config = tmp_path / "agent ü" / "agent.yaml"
    config.parent.mkdir()
    config.write_text(json.dumps({
        "device_id": "cam-1", "bundle": {"path": str(out / "bundle.hgb"), "public_key": str(out / "keys" / "signing.pub")},
        "source": {"kind": "images", "uri": str(data / "猫")},
        "sinks": [{"kind": "jsonl", "path": "résultats ü/results.jsonl"}]}, ensure_ascii=False), encoding="utf-8")
    assert agent_main(["run", "--config", str(config)]) == 0
    rows = [json.loads(line) for line in (config.parent / "résultats ü" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 24 and {row["label_name"] for row in rows} <= set(NAMES)
