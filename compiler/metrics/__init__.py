"""The paper's metrics: A and L through the runtime gate and fusion, T (Eq. 10), S (Eq. 11), E (Eq. 12), L (Eq. 13)."""

from hgen.compiler.metrics.costs import LAYER_COSTS, LayerCost, ModelCosts, layer_cost, model_costs
from hgen.compiler.metrics.formulas import energy_mj, latency_ms, storage_mb
from hgen.compiler.metrics.hdnn import HDNNEvaluation, ask_crowd, evaluate_hdnn, fit_difficulty

__all__ = ["LAYER_COSTS", "HDNNEvaluation", "LayerCost", "ModelCosts", "ask_crowd", "energy_mj", "evaluate_hdnn",
           "fit_difficulty", "latency_ms", "layer_cost", "model_costs", "storage_mb"]
