"""Gradient estimators: backpropagation, forward gradients (jvp), zeroth-order (SPSA, MeZO, BAFFLE).

Each estimator is a pure function of a loss closure (``params -> scalar``), the tensors
to differentiate and, for the random ones, a seed schedule ``(seed, keys)``; none holds
state. Algorithms call these and never ``torch.func`` directly; ``ESTIMATORS`` maps
names to them, so a client procedure takes its estimator as a parameter.
"""

from fedtune.grad.backprop import backprop_gradient
from fedtune.grad.estimators import ESTIMATORS, Estimator, register_estimator
from fedtune.grad.exact_head import exact_head_gradient
from fedtune.grad.forward import (
    DISTRIBUTIONS,
    Distribution,
    ForwardGradient,
    forward_gradient,
    jvp,
    make_tangents,
    rebuild_gradient,
    tangent,
)
from fedtune.grad.functional import LossClosure, dropout_disabled, math_attention, model_loss
from fedtune.grad.guided import alignment_scores, fwdllm_gradient, rank_candidates
from fedtune.grad.zeroth import (
    central_difference,
    mezo_directional,
    mezo_gradient,
    mezo_replay_step_,
    perturb_,
    seeded_sgd_step_,
    spsa_gradient,
)

__all__ = [
    "DISTRIBUTIONS",
    "ESTIMATORS",
    "Distribution",
    "Estimator",
    "ForwardGradient",
    "LossClosure",
    "alignment_scores",
    "backprop_gradient",
    "central_difference",
    "dropout_disabled",
    "exact_head_gradient",
    "forward_gradient",
    "fwdllm_gradient",
    "jvp",
    "make_tangents",
    "math_attention",
    "mezo_directional",
    "mezo_gradient",
    "mezo_replay_step_",
    "model_loss",
    "perturb_",
    "rank_candidates",
    "rebuild_gradient",
    "register_estimator",
    "seeded_sgd_step_",
    "spsa_gradient",
    "tangent",
]
