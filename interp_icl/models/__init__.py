"""Model families as TransformerLens hooked models, and the adapter every downstream user needs.

`build_model` makes the hooked model of a config. `layout(model)` reads what the model's cfg
declares about its layout (`interp_icl.models.layout`); code outside this package uses that, never
a model class. `target_offset(model)` says which token a row of the model's output predicts: row t
predicts token ``t + target_offset`` (1 for TransformerLens logits, 0 for the gih model, whose row
t is the query slot of token t). `next_token_log_probs` returns target-aligned log-probabilities
for any layout.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.models.common import check_tokens
from interp_icl.models.gih import GIHConfig, GIHModel, head_subsets
from interp_icl.models.icl_classifier import ICLClassifier
from interp_icl.models.regression_block import RegressionBlock
from interp_icl.models.layout import ModelLayout, layout
from interp_icl.registry import FamilyConfigBase, family_entry

PROB_FLOOR = 1e-12  # probabilities are floored here before the log (caps a token's loss at 27.6)


def build_model(model: FamilyConfigBase, d_vocab: int, n_ctx: int, seed: int) -> nn.Module:
    """The hooked model a config describes, initialised from `seed`, built by its family's
    registered build function. For the lsa and block families `d_vocab` is the token width d + 1
    of the regression task; for the classifier family it is the classification task's token
    width D + T + 1 (the label-id channel included, so the model reads D + T) and the label count
    comes from ``model.n_labels``."""
    return family_entry(model.family).make(model, d_vocab, n_ctx, seed)


def is_gih(model: nn.Module) -> bool:
    return isinstance(model, GIHModel)


def is_regression_block(model: nn.Module) -> bool:
    return isinstance(model, RegressionBlock)


def target_offset(model: nn.Module) -> int:
    """Row t of the model's output predicts token t + target_offset(model) (its layout's)."""
    return layout(model).target_offset


def training_module(model: nn.Module) -> nn.Module:
    """The module the trainer calls (the layout's ``training_module`` attribute, else the model):
    `bridge.original_model` for the standard family."""
    name = layout(model).training_module
    return model if name is None else getattr(model, name)


def progress_numbers(model: nn.Module) -> dict[str, object]:
    """Family-specific numbers the trainer logs with each evaluation: the gih model's a and p_S
    (``gih_a``, ``gih_subset_weights``); {} for other families."""
    if is_gih(model):
        return {"gih_a": float(model.a), "gih_subset_weights": [float(p) for p in model.subset_weights()]}
    return {}


def output_log_probs(model: nn.Module, output: Tensor) -> Tensor:
    """Row-wise log-probabilities ``[..., V]`` of a model output ``[..., V]``: log-softmax of
    logits, or the log of probabilities floored at PROB_FLOOR (the layout's ``output``)."""
    if layout(model).output == "probs":
        return torch.log(output.clamp_min(PROB_FLOOR))
    return F.log_softmax(output, dim=-1)


def next_token_log_probs(model: nn.Module, tokens: Tensor, last_only: bool = False) -> Tensor:
    """Target-aligned log-probabilities ``[B, T, d]`` (row t: law of token t given tokens < t).

    Row 0 is uniform (no context) for every layout. With `last_only`, returns only the row of
    the last token, ``[B, d]``, using the cheapest path the layout declares.
    """
    d_vocab, n_ctx = model.cfg.d_vocab, model.cfg.n_ctx
    tokens = check_tokens(tokens, d_vocab, n_ctx)
    if last_only and tokens.shape[1] == 1:  # the first token has no context: uniform
        return torch.full((tokens.shape[0], d_vocab), -math.log(d_vocab), device=tokens.device)
    shape = layout(model)
    off = shape.target_offset
    if last_only and shape.last_forward is not None:
        return output_log_probs(model, getattr(model, shape.last_forward)(tokens))
    module = training_module(model)
    if last_only:  # the row predicting token T-1 is row T-1-off: tokens after it are not needed
        return output_log_probs(model, module(tokens[:, : tokens.shape[1] - off])[:, -1])
    log_probs = output_log_probs(model, module(tokens))
    if off == 0:  # row 0 already holds the first token's law (uniform)
        return log_probs
    uniform = torch.full_like(log_probs[:, :off], -math.log(d_vocab))
    return torch.cat([uniform, log_probs[:, :-off]], dim=1)


def log_probs_from_logits(logits: Tensor) -> Tensor:
    """TransformerLens logits ``[B, T, d]`` (row i predicts token i+1) -> target-aligned
    log-probabilities ``[B, T, d]`` (row t: law of token t; row 0 uniform)."""
    uniform = torch.full_like(logits[:, :1], -math.log(logits.shape[-1]))
    return torch.cat([uniform, F.log_softmax(logits[:, :-1], dim=-1)], dim=1)


__all__ = [
    "GIHConfig",
    "GIHModel",
    "ICLClassifier",
    "ModelLayout",
    "build_model",
    "head_subsets",
    "is_gih",
    "is_regression_block",
    "layout",
    "log_probs_from_logits",
    "next_token_log_probs",
    "output_log_probs",
    "progress_numbers",
    "target_offset",
    "training_module",
]
