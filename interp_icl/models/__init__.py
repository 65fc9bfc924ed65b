"""Model families as TransformerLens hooked models, and the adapter every downstream user needs.

`build_model` makes the hooked model of a config. `target_offset(model)` says which token a row of
the model's output predicts: row t predicts token ``t + target_offset`` (1 for TransformerLens
logits, 0 for the gih model, whose row t is the query slot of token t).
`next_token_log_probs` returns target-aligned log-probabilities for either family.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.models.common import check_tokens
from interp_icl.models.gih import GIHConfig, GIHModel, head_subsets
from interp_icl.models.icl_classifier import ICLClassifier
from interp_icl.models.linear_attention import LinearSelfAttention
from interp_icl.models.regression_block import RegressionBlock
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
    """Row t of the model's output predicts token t + target_offset(model)."""
    return 0 if is_gih(model) else 1


def training_module(model: nn.Module) -> nn.Module:
    """The module the trainer calls: `bridge.original_model` for the standard family."""
    if is_gih(model) or isinstance(model, (LinearSelfAttention, RegressionBlock, ICLClassifier)):
        return model
    return model.original_model


def next_token_log_probs(model: nn.Module, tokens: Tensor, last_only: bool = False) -> Tensor:
    """Target-aligned log-probabilities ``[B, T, d]`` (row t: law of token t given tokens < t).

    Row 0 is uniform (no context) for both families. With `last_only`, returns only the row of
    the last token, ``[B, d]``, using the cheapest path the family has.
    """
    d_vocab, n_ctx = model.cfg.d_vocab, model.cfg.n_ctx
    tokens = check_tokens(tokens, d_vocab, n_ctx)
    if last_only and tokens.shape[1] == 1:  # the first token has no context: uniform
        return torch.full((tokens.shape[0], d_vocab), -math.log(d_vocab), device=tokens.device)
    if is_gih(model):
        if last_only:
            return torch.log(model.forward_last(tokens).clamp_min(PROB_FLOOR))
        return torch.log(model(tokens).clamp_min(PROB_FLOOR))
    module = training_module(model)
    if last_only:
        return F.log_softmax(module(tokens[:, :-1])[:, -1], dim=-1)
    return log_probs_from_logits(module(tokens))


def log_probs_from_logits(logits: Tensor) -> Tensor:
    """TransformerLens logits ``[B, T, d]`` (row i predicts token i+1) -> target-aligned
    log-probabilities ``[B, T, d]`` (row t: law of token t; row 0 uniform)."""
    uniform = torch.full_like(logits[:, :1], -math.log(logits.shape[-1]))
    return torch.cat([uniform, F.log_softmax(logits[:, :-1], dim=-1)], dim=1)


__all__ = [
    "GIHConfig",
    "GIHModel",
    "ICLClassifier",
    "build_model",
    "head_subsets",
    "is_gih",
    "is_regression_block",
    "log_probs_from_logits",
    "next_token_log_probs",
    "target_offset",
    "training_module",
]
