"""The standard family: a TransformerLens-native transformer of 1 to 3 layers (default 2) built
with `TransformerBridge.boot_native`.

The returned object is a `TransformerBridge` with TransformerLens hook names
(``blocks.{l}.attn.hook_pattern`` ``[batch, head, query_pos, key_pos]``, ``blocks.{l}.hook_resid_pre``,
...). Its logits follow the TransformerLens convention: ``logits[:, t]`` predicts token t+1.
Training runs on ``bridge.original_model`` (the same parameters, fewer wrapper calls); a test checks
that the two give the same logits. The layout (`interp_icl.models.layout`) is a plain
TransformerLens model's, except ``cfg.training_module = "original_model"``.
"""

from __future__ import annotations

import warnings

import transformer_lens.model_bridge.sources  # noqa: F401  (attaches TransformerBridge.boot_native)
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

from interp_icl.config import ModelConfig
from interp_icl.errors import ConfigError, require

N_LAYERS = 2  # default depth
MAX_LAYERS = 3


def standard_layers(model: ModelConfig) -> int:
    """Depth of a standard model: the config's ``n_layers`` when it has one for this family, else 2.
    The shared `ModelConfig`'s ``n_layers`` (default 1) belongs to the lsa / block families, so a
    shared ModelConfig gives 2."""
    if isinstance(model, ModelConfig):
        return N_LAYERS
    return int(getattr(model, "n_layers", N_LAYERS))


def bridge_config(
    model: ModelConfig, d_vocab: int, n_ctx: int, seed: int, n_layers: int | None = None
) -> TransformerBridgeConfig:
    """The TransformerBridgeConfig of a standard model (`n_layers`: default `standard_layers`)."""
    n_layers = standard_layers(model) if n_layers is None else n_layers
    require(
        1 <= n_layers <= MAX_LAYERS,
        f"a standard model has 1 to {MAX_LAYERS} layers, got n_layers={n_layers}",
        ConfigError,
    )
    return TransformerBridgeConfig(
        d_model=model.d_model,
        d_head=model.d_head,
        n_heads=model.n_heads,
        n_layers=n_layers,
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


def build_standard(
    model: ModelConfig, d_vocab: int, n_ctx: int, seed: int, n_layers: int | None = None
) -> TransformerBridge:
    """A freshly initialised bridge; the weights depend only on `seed` (and the sizes)."""
    cfg = bridge_config(model, d_vocab, n_ctx, seed, n_layers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_native(cfg)
    bridge.cfg.training_module = "original_model"  # layout: the trainer calls the bare module
    return bridge
