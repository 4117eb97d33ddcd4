"""The paper's system metrics S (Eq. 11), E (Eq. 12) and T (Eq. 10) from a cost model.

S: bytes to hold the weights and the activations of one inference: (W * b_w + A * b_a) / 8, in MB (1e6 bytes);
   32-bit by default, 8-bit for an int8 model.
E: eta = 52.8 pJ per MAC, an activation access costs 200 MACs' worth and a weight access 6 (off-chip vs cache
   reads, as in AdaDeep's energy model): E = eta * (MACs + 200 * A + 6 * W), in mJ.
T: T_infer + T_extra / M: the mean per-sample latency, where T_extra is the total time people took on the
   samples sent to them.
"""

from __future__ import annotations

from hgen.compiler.errors import InvalidArgumentError
from hgen.compiler.metrics.costs import ModelCosts

ETA_PJ_PER_MAC = 52.8
ACTIVATION_ACCESS_FACTOR = 200.0
WEIGHT_ACCESS_FACTOR = 6.0


def storage_mb(costs: ModelCosts, weight_bits: int = 32, activation_bits: int = 32) -> float:
    if weight_bits <= 0 or activation_bits <= 0:
        raise InvalidArgumentError("bit widths must be positive")
    return (costs.weights * weight_bits + costs.activations * activation_bits) / 8.0 / 1e6


def energy_mj(costs: ModelCosts) -> float:
    picojoules = ETA_PJ_PER_MAC * (costs.macs + ACTIVATION_ACCESS_FACTOR * costs.activations
                                   + WEIGHT_ACCESS_FACTOR * costs.weights)
    return picojoules * 1e-9


def latency_ms(t_infer_ms: float, t_extra_total_ms: float, num_samples: int) -> float:
    if num_samples < 1:
        raise InvalidArgumentError(f"the number of samples must be >= 1, got {num_samples}")
    return t_infer_ms + t_extra_total_ms / num_samples
