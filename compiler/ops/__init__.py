"""Compression operators (H-Gen section 5.1.1) as weight-preserving Keras rewrites, and plans that apply them.

Public API (what the search calls):
- `OPERATORS`: name -> Operator registry (one module per operator registers itself; the first lookup loads them).
- `operators_for(layer, model=None)`: operator names valid for a layer, always including "identity".
- `Plan` / `LayerChoice`: layer name -> (operator, ratio, options); to/from dict and JSON.
- `validate_plan(model, plan)`: one `PlanError` listing every problem.
- `apply_plan(model, plan, calibration_x)`: a new, initialised model; the input is never mutated.
- `estimate_plan(model, plan)` -> `PlanEffect(params, macs, activations, storage_mb, energy_mj)` without fitting.
- Policies: `every_layer`, `skip_first_conv_per_block`, `explicit`.
"""

from hgen.compiler.ops.base import OPERATORS, Built, Operator, OperatorConfig
from hgen.compiler.ops.errors import OperatorError, PlanError, RewriteError
from hgen.compiler.ops.plan import (LayerChoice, Plan, every_layer, explicit, first_convs_of_blocks, operators_for,
                                    resolve_operator, skip_first_conv_per_block, validate_plan)
from hgen.compiler.ops.rewrite import PlanEffect, apply_plan, estimate_model, estimate_plan, operator_effect

__all__ = ["OPERATORS", "Built", "LayerChoice", "Operator", "OperatorConfig", "OperatorError", "Plan", "PlanEffect",
           "PlanError", "RewriteError", "apply_plan", "estimate_model", "estimate_plan", "every_layer", "explicit",
           "first_convs_of_blocks", "operator_effect", "operators_for", "resolve_operator", "skip_first_conv_per_block",
           "validate_plan"]
