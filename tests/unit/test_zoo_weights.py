"""`weights=imagenet` for mobilenet_v2: read from the Keras cache, never downloaded here; a typed error otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from hgen.compiler.models import build_model
from hgen.compiler.models.weights import PretrainedWeightsError, mobilenet_v2_file

FILE_224 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty Keras cache, and any download attempt is a test failure."""
    import keras

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download weights")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setattr(keras.utils, "get_file", no_download)
    return tmp_path


def test_file_names_follow_keras_applications():
    assert mobilenet_v2_file(0.35, (96, 96, 3)).endswith("_0.35_96_no_top.h5")
    assert mobilenet_v2_file(1.0, (32, 48, 3)) == FILE_224.replace("0.35", "1.0")  # other sizes load the 224 file
    with pytest.raises(PretrainedWeightsError, match="alpha"):
        mobilenet_v2_file(0.3, (96, 96, 3))
    with pytest.raises(PretrainedWeightsError, match="channels=3"):
        mobilenet_v2_file(0.35, (96, 96, 1))


def test_offline_without_the_file_names_it_and_where_to_put_it(keras_home):
    with pytest.raises(PretrainedWeightsError) as error:
        build_model("mobilenet_v2", (32, 32, 3), 5, {"weights": "imagenet", "download": False})
    message = str(error.value)
    assert FILE_224 in message and str(keras_home / "models" / FILE_224) in message
    assert "storage.googleapis.com" in message


def test_a_failed_download_is_the_same_typed_error(keras_home, monkeypatch):
    import keras

    def offline(*args, **kwargs):
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(PretrainedWeightsError, match="download failed.*name resolution"):
        build_model("mobilenet_v2", (32, 32, 3), 5, {"weights": "imagenet"})


def test_a_cached_file_is_loaded_into_the_backbone(keras_home):
    import h5py
    import keras
    from keras.src.legacy.saving import legacy_h5_format

    source = keras.applications.MobileNetV2(input_shape=(32, 32, 3), include_top=False, weights=None, alpha=0.35)
    (keras_home / "models").mkdir()
    with h5py.File(keras_home / "models" / FILE_224, "w") as f:  # the legacy layout Keras applications ship
        legacy_h5_format.save_weights_to_hdf5_group(f, source)
    model = build_model("mobilenet_v2", (32, 32, 3), 5, {"weights": "imagenet"})
    for name in ("Conv1", "block_5_depthwise", "Conv_1_bn"):
        for got, want in zip(model.get_layer(name).get_weights(), source.get_layer(name).get_weights()):
            np.testing.assert_array_equal(got, want)


def test_a_corrupt_cached_file_names_itself(keras_home):
    (keras_home / "models").mkdir()
    (keras_home / "models" / FILE_224).write_bytes(b"not hdf5")
    with pytest.raises(PretrainedWeightsError, match=f"cannot load pretrained weights .*{FILE_224}"):
        build_model("mobilenet_v2", (32, 32, 3), 5, {"weights": "imagenet"})
