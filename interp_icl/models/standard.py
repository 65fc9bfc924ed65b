"""The standard family: a TransformerLens-native two-layer transformer (`TransformerBridge.boot_native`).

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

from interp_icl.config import ModelConfig

N_LAYERS = 2


def bridge_config(model: ModelConfig, d_vocab: int, n_ctx: int, seed: int) -> TransformerBridgeConfig:
    """The TransformerBridgeConfig of a standard two-layer model."""
    return TransformerBridgeConfig(
        d_model=model.d_model,
        d_head=model.d_head,
        n_heads=model.n_heads,
        n_layers=N_LAYERS,
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


def build_standard(model: ModelConfig, d_vocab: int, n_ctx: int, seed: int) -> TransformerBridge:
    """A freshly initialised bridge; the weights depend only on `seed`."""
    cfg = bridge_config(model, d_vocab, n_ctx, seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_native(cfg)
    return bridge
