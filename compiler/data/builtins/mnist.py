"""`mnist`: LeCun's handwritten digits from the IDX files beside the checkout ($HGEN_DATA/mnist/), usually only the
10,000 test images (split 60/10/30 by seed); also the source of the synthetic `mnist-det` detection set."""

from __future__ import annotations

from hgen.compiler.data.builtins import DIGIT_LABELS, IdxBuiltin, register
from hgen.compiler.data.builtins.fashion_mnist import FashionMnist
from hgen.compiler.data.sources import IdxSource


class Mnist(IdxBuiltin):
    name = "mnist"
    title = "MNIST"
    labels = DIGIT_LABELS
    rank = 10
    detection = "mnist-det"
    demo = FashionMnist.demo  # the same size and shape of images as FashionMNIST: its measured preset holds
    source = IdxSource("mnist", None, "mnist", "put the MNIST IDX files in $HGEN_DATA/mnist/")


register(Mnist())
