"""`sparse_coding` (o_f3): W [din, dout] ~ D C with a k-atom dictionary D and sparse codes C (SparseSep, Bhattacharya
& Lane 2016).

The layer becomes Dense(k, no bias) holding D, then a `MaskedDense` holding C (t non-zeros per output column) with
the original bias and activation. Initialisation: D starts from the top-k left singular vectors; a few rounds of
orthogonal matching pursuit (codes) and MOD (dictionary = W C^+) follow; then (refit=True, default; needs
calibration data) the kept codes are refitted by least squares on the new model's inputs times D against the
original pre-activation outputs. Exact when ratio = density = 1 without refit (k = min(din, dout), t = k).
Knobs: ratio = k / min(din, dout) (default 0.5); `density` = t / k (default 0.25).
Stored weights: din*k + t*dout + dout. TFLite / S: S (Eq. 11) counts the dictionary plus only the non-zero codes
(sparse encoding, index overhead not counted); the .tflite file stores C as a dense matrix with zeros.
"""

from __future__ import annotations

import math
from typing import Any

import keras
import numpy as np
from pydantic import Field

from hgen.compiler.ops.base import Built, Operator, OperatorConfig, kernel_and_bias, rank_from, register
from hgen.compiler.ops.fitting import first_k_mask, masked_lstsq, top_k_mask
from hgen.compiler.ops.layers import MaskedDense


class SparseCodingConfig(OperatorConfig):
    ratio: float = Field(0.5, gt=0.0, le=1.0, title="Dictionary atoms k as a fraction of min(din, dout)")
    density: float = Field(0.25, gt=0.0, le=1.0, title="Non-zero codes per output column, fraction of k")
    iterations: int = Field(3, ge=0, le=50, title="Rounds of OMP + MOD dictionary updates")
    refit: bool = Field(True, title="Least-squares refit of the kept codes on calibration data")


def sizes(layer: Any, config: SparseCodingConfig, operator: str) -> tuple[int, int]:
    """(k atoms, t non-zeros per code column)."""
    din, dout = (int(d) for d in layer.kernel.shape)
    k = rank_from(config.ratio, min(din, dout), None, layer.name, operator)
    return k, max(1, math.ceil(config.density * k - 1e-9))


def sparse_code(matrix: np.ndarray, k: int, t: int, iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """matrix [din, dout] ~ D [din, k] @ C [k, dout], C with t non-zeros per column (OMP codes, MOD dictionary)."""
    from sklearn.linear_model import orthogonal_mp

    u = np.linalg.svd(matrix, full_matrices=False)[0]
    dictionary = u[:, :k]
    codes = np.zeros((k, matrix.shape[1]))
    for step in range(iterations + 1):
        codes = np.asarray(orthogonal_mp(dictionary, matrix, n_nonzero_coefs=t)).reshape(k, -1)
        if step == iterations:
            break
        dictionary = matrix @ np.linalg.pinv(codes)
        norms = np.linalg.norm(dictionary, axis=0)
        dictionary = dictionary / np.where(norms > 0, norms, 1.0)
    return dictionary, codes


@register
class SparseCoding(Operator):
    name = "sparse_coding"
    family = "sparse_coding"
    paper_id = "o_f3"
    layer_types = frozenset({"Dense"})
    config_type = SparseCodingConfig

    def check(self, layer: Any, config: SparseCodingConfig, graph: Any) -> None:
        super().check(layer, config, graph)
        sizes(layer, config, self.name)

    def build(self, layer: Any, config: SparseCodingConfig, x: Any) -> Built:
        k, t = sizes(layer, config, self.name)
        atoms = keras.layers.Dense(k, use_bias=False, name=f"{layer.name}_dictionary")
        codes = MaskedDense(layer.units, activation=layer.activation, use_bias=layer.use_bias,
                            name=f"{layer.name}_codes")
        output = codes(atoms(x))
        codes.set_mask(first_k_mask((k, layer.units), t))
        return Built(output, {"dictionary": atoms, "codes": codes})

    def initialise(self, layer: Any, config: SparseCodingConfig, built: Built, data: Any) -> None:
        atoms, codes_layer = built.layers["dictionary"], built.layers["codes"]
        kernel, bias = kernel_and_bias(layer)
        k, t = sizes(layer, config, self.name)
        dictionary, codes = sparse_code(kernel, k, t, config.iterations)
        mask = top_k_mask(codes, t)
        codes = codes * mask
        atoms.set_weights([dictionary])
        if config.refit:
            features = data.inputs.reshape(-1, kernel.shape[0]) @ dictionary
            codes, bias = masked_lstsq(features, data.targets.reshape(-1, layer.units), mask, bias=layer.use_bias)
        codes_layer.set_mask(mask)
        codes_layer.kernel.assign(codes.astype(np.float32))
        if layer.use_bias:
            codes_layer.bias.assign(bias.astype(np.float32))
