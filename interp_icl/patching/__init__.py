"""Batched activation patching, ablations, path patching and component-role experiments.

The engine works on any hooked model through `run_with_hooks` (`hooks_engine`) and, for
standard-layout TransformerLens models, recomputes only what a patch can change (`fast_engine`).
"""

from interp_icl.patching.metrics import Metric, kl_to, logit_diff, prob_diff, target_loss
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sweep import ablation, activation_patching, patch_sweep
from interp_icl.patching.targets import SITES, Target

__all__ = [
    "SITES",
    "Metric",
    "PatchResult",
    "Target",
    "ablation",
    "activation_patching",
    "kl_to",
    "logit_diff",
    "patch_sweep",
    "prob_diff",
    "target_loss",
]
