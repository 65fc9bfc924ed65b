"""The standard family: a TransformerLens-native transformer (`TransformerBridge.boot_native`) of
`model.n_layers` layers (1 to 3, default 2).

The returned object is a `TransformerBridge` with TransformerLens hook names
(``blocks.{l}.attn.hook_pattern`` ``[batch, head, query_pos, key_pos]``, ``blocks.{l}.hook_resid_pre``,
...). Its logits follow the TransformerLens convention: ``logits[:, t]`` predicts token t+1.
Training runs on ``bridge.original_model`` (the same parameters, fewer wrapper calls); a test checks
that the two give the same logits.
"""

from __future__ import annotations

import warnings

import transformer_lens.model_bridge.sources  # noqa: F401  (attaches TransformerBridge.boot_native)
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from interp_icl.builtin_families import StandardConfig


def bridge_config(model: StandardConfig, d_vocab: int, n_ctx: int, seed: int) -> TransformerBridgeConfig:
    """The TransformerBridgeConfig of a standard model of `model.n_layers` layers."""
    return TransformerBridgeConfig(
        d_model=model.d_model,
        d_head=model.d_head,
        n_heads=model.n_heads,
        n_layers=model.n_layers,
        n_ctx=n_ctx,
        d_vocab=d_vocab,
        d_mlp=model.d_mlp,
        attn_only=model.attn_only,
        normalization_type=None if model.norm == "none" else "LN",
        positional_embedding_type=model.positional,
        act_fn=model.act_fn,
        seed=seed,
        device="cpu",
    )


def build_standard(model: StandardConfig, d_vocab: int, n_ctx: int, seed: int) -> TransformerBridge:
    """The registered build function of the standard family: a freshly initialised bridge;
    the weights depend only on `seed`."""
    cfg = bridge_config(model, d_vocab, n_ctx, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_native(cfg)
    bridge.cfg.training_module = "original_model"  # layout: the trainer calls the bare module
    return bridge
