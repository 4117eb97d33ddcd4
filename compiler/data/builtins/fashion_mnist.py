"""`fashion-mnist`: Zalando's 28x28 grey clothing images (60,000 to train, 10,000 to test), from Debian's
dataset-fashion-mnist package, $HGEN_DATA/fashion-mnist/ or the Keras cache; the paper's D3..D5."""

from __future__ import annotations

from hgen.compiler.data.builtins import DemoDefaults, IdxBuiltin, register
from hgen.compiler.data.sources import IdxSource

FASHION_LABELS = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                  "Ankle boot")


class FashionMnist(IdxBuiltin):
    name = "fashion-mnist"
    title = "FashionMNIST"
    labels = FASHION_LABELS
    rank = 20
    # at low resolution; 60,000 training images, so few epochs suffice (measured as `hgen.compiler.demo.presets` says)
    demo = DemoDefaults(accuracy=0.86, base_epochs=4, final_epochs=2)
    source = IdxSource("fashion-mnist", "/usr/share/datasets/fashion-mnist", "fashion_mnist",
                       "apt-get install dataset-fashion-mnist")


register(FashionMnist())
