"""A known-answer standard model: a hand-set two-layer induction circuit in a TransformerBridge.

`induction_circuit(vocab_size, n_ctx)` returns a TransformerLens-native (`boot_native`),
attention-only, norm-free two-layer model with two heads per layer whose weights are set by hand:
  * L0H0 is a previous-token head: its query at i is the one-hot of position i - 1, its key at j
    the one-hot of position j, so it attends to i - 1 (to 0 at i = 0) and writes x_{i-1} into a
    "previous token" subspace;
  * L1H1 is an induction head: its query reads x_i, its key reads the previous-token subspace
    x_{l-1}, so it attends to the keys l whose previous token equals the current one, and writes
    x_l into an "output" subspace that the unembedding reads;
  * L0H1 and L1H0 have all weights zero (uniform attention, zero output).
The model's prediction is therefore the in-context bigram ({1}-gram) estimator, softened by the
finite `sharpness` and `logit_scale`. Residual layout (d_model = 3d + n_ctx):
``[token one-hot d | position one-hot n_ctx | previous token d | output d]``; d_head = max(n_ctx, d).
"""

from __future__ import annotations

import math

import torch
from transformer_lens.model_bridge import TransformerBridge

from interp_icl.builtin_families import StandardConfig
from interp_icl.errors import require
from interp_icl.models.standard import build_standard

PREV_TOKEN_HEAD = (0, 0)
INDUCTION_HEAD = (1, 1)


def induction_circuit(
    vocab_size: int, n_ctx: int, sharpness: float = 30.0, logit_scale: float = 20.0
) -> TransformerBridge:
    """The hand-set previous-token + induction model (see the module docstring).

    sharpness: logit gap between an attended key and the rest, after TransformerLens's 1/sqrt(d_head).
    logit_scale: unembedding gain on the output subspace (logit of a token = scale x its attention share).
    """
    require(vocab_size >= 2 and n_ctx >= 2, f"need vocab_size >= 2 and n_ctx >= 2, got {vocab_size}, {n_ctx}")
    d = vocab_size
    tok, pos, prev, out = 0, d, d + n_ctx, 2 * d + n_ctx
    d_model = 3 * d + n_ctx
    d_head = max(n_ctx, d)
    config = StandardConfig(
        family="standard", n_heads=2, d_model=d_model, d_head=d_head, d_mlp=4, attn_only=True, norm="none"
    )
    bridge = build_standard(config, d, n_ctx, seed=0)
    native = bridge.original_model
    gain = sharpness * math.sqrt(d_head)

    def attn(layer: int):
        return native.layers[layer]._original_component.attn._original_component

    with torch.no_grad():
        for p in native.parameters():
            p.zero_()
        native.tok_embed._original_component.weight[:, tok : tok + d] = torch.eye(d)
        native.pos._original_component.weight[:, pos : pos + n_ctx] = torch.eye(n_ctx)

        # L0H0: previous-token head (rows 0..d_head-1 of q/k/v are head 0)
        a0 = attn(0)
        for i in range(n_ctx):
            a0.q.weight[max(i - 1, 0), pos + i] = gain  # query at i -> position i-1
            a0.k.weight[i, pos + i] = 1.0  # key at j -> position j
        for k in range(d):
            a0.v.weight[k, tok + k] = 1.0
            a0.o.weight[prev + k, k] = 1.0

        # L1H1: induction head (rows d_head..2*d_head-1 are head 1)
        a1 = attn(1)
        for k in range(d):
            a1.q.weight[d_head + k, tok + k] = gain  # query: current token x_i
            a1.k.weight[d_head + k, prev + k] = 1.0  # key: previous token x_{l-1}
            a1.v.weight[d_head + k, tok + k] = 1.0  # value: x_l
            a1.o.weight[out + k, d_head + k] = 1.0
        native.head._original_component.weight[:, out : out + d] = logit_scale * torch.eye(d)
    bridge.eval()
    return bridge
