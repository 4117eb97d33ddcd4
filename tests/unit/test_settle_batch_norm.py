"""Precise BatchNorm statistics after training (`settle_batch_norm`): with MobileNetV2's momentum 0.999 a short
training leaves the moving statistics near their initial values; settling sets them to the training images'."""

import numpy as np

from hgen.compiler.train import batch_norms, settle_batch_norm


def small_model():
    import keras

    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, kernel_initializer="ones")(inputs)
    x = keras.layers.BatchNormalization(momentum=0.999, name="bn")(x)
    inner = keras.Model(inputs, x, name="inner")  # nested: found too
    outer_in = keras.Input((8, 8, 3))
    y = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    return keras.Model(outer_in, keras.layers.Dense(2)(y))


def test_moving_statistics_become_the_training_images_and_momentum_is_restored():
    model = small_model()
    x = np.random.default_rng(0).uniform(2.0, 4.0, (300, 8, 8, 3)).astype(np.float32)
    (norm,) = batch_norms(model)
    assert np.allclose(norm.moving_mean.numpy(), 0.0)
    assert settle_batch_norm(model, x, batch_size=64) == 5
    # all-ones 3x3 kernel, zero padding: an output sums 3 channels x (22/8)^2 inputs of mean 3 on average
    np.testing.assert_allclose(norm.moving_mean.numpy(), 3.0 * 3 * (22 / 8) ** 2, rtol=0.01)
    assert norm.momentum == 0.999
    assert settle_batch_norm(small_model(), x[:0]) == 0


def test_frozen_epochs_train_the_weights_and_restore_the_batch_norm_layers():
    from hgen.compiler.data import Split
    from hgen.compiler.train import TrainConfig, train_classifier

    model = small_model()
    rng = np.random.default_rng(1)
    train = Split(rng.uniform(0.0, 1.0, (256, 8, 8, 3)).astype(np.float32), rng.integers(0, 2, 256))
    (norm,) = batch_norms(model)
    train_classifier(model, train, config=TrainConfig(epochs=1, batch_size=64, freeze_bn_epochs=0))
    settled = norm.moving_mean.numpy().copy()
    dense = model.layers[-1].kernel.numpy().copy()
    fresh = small_model()
    fresh.set_weights(model.get_weights())
    train_classifier(fresh, train, config=TrainConfig(epochs=1, batch_size=64, freeze_bn_epochs=2))
    (again,) = batch_norms(fresh)
    assert again.trainable and again.momentum == 0.999  # restored for later fine-tunes
    assert not np.allclose(fresh.layers[-1].kernel.numpy(), dense)  # the frozen epochs trained the weights
    assert np.all(np.isfinite(again.moving_mean.numpy())) and settled.shape == again.moving_mean.shape


def test_distillation_leaves_the_student_with_the_statistics_of_its_training_images():
    """Without settling, the moving mean stays near 0 after a short fine-tune (momentum 0.999) although the images'
    activations average ~68: the deployed student would normalise with the wrong statistics."""
    from hgen.compiler.data import Split
    from hgen.compiler.train import DistillConfig, distill

    model = small_model()
    rng = np.random.default_rng(2)
    x = rng.uniform(2.0, 4.0, (256, 8, 8, 3)).astype(np.float32)
    (norm,) = batch_norms(model)
    distill(model, rng.normal(size=(256, 2)), Split(x, rng.integers(0, 2, 256)),
            DistillConfig(epochs=1, batch_size=64, learning_rate=1e-6))
    np.testing.assert_allclose(norm.moving_mean.numpy(), 3.0 * 3 * (22 / 8) ** 2, rtol=0.02)
    assert norm.momentum == 0.999
