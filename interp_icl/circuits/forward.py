"""The forward pass of a standard-layout model written out at head granularity, so that every
receiver of the graph (`interp_icl.circuits.graph`) has its own input: head h's query, key and value
inputs, each MLP's input and the final residual are the residual stream plus an optional delta
``[N, T, d_model]`` of their own. With no delta it is the model's forward (a test holds it to the
model's logits); a delta on one receiver is an edge patch, a zero delta with a gradient is where
EAP reads d metric / d(receiver input). The arithmetic and weights are those of the fast patching
engine (`interp_icl.patching.fast_engine`: pre-LN blocks, LayerNorm or none, standard positions).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.circuits.graph import Graph
from interp_icl.errors import require
from interp_icl.patching.fast_engine import (
    ACTIVATIONS,
    attention_scale,
    norm_params,
    read_layer,
    unsupported_reason,
)


class EdgeForward:
    def __init__(self, model: nn.Module, graph: Graph):
        reason = unsupported_reason(model)
        require(reason is None, f"edge scores need a standard-layout model: {reason}")
        cfg = model.cfg
        self.graph = graph
        self.layers = [read_layer(model, layer) for layer in range(cfg.n_layers)]
        self.ln_final = norm_params(model.ln_final) if cfg.normalization_type == "LN" else None
        self.eps = float(getattr(cfg, "eps", 1e-5))
        self.scale = attention_scale(cfg)
        self.act = None if getattr(cfg, "attn_only", False) else ACTIVATIONS[cfg.act_fn]
        self.W_E, self.W_pos = model.W_E.detach(), model.W_pos.detach()
        self.W_U, self.b_U = model.W_U.detach(), model.b_U.detach()

    def _ln(self, x: Tensor, params: tuple[Tensor, Tensor] | None) -> Tensor:
        return x if params is None else F.layer_norm(x, (x.shape[-1],), params[0], params[1], self.eps)

    def embed(self, tokens: Tensor) -> Tensor:
        return self.W_E[tokens]

    def run(self, tokens: Tensor, deltas: dict[str, Tensor] | None = None, embed: Tensor | None = None
            ) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits ``[N, T, V]``, {sender: its write ``[N, T, d]``}) with ``deltas`` {receiver:
        ``[N, T, d]``} added to the receivers' inputs and the token embedding replaced by
        `embed` ``[N, T, d]`` if given."""
        deltas = deltas or {}
        seq = tokens.shape[1]
        e = self.embed(tokens) if embed is None else embed
        writes = {"embed": e}
        resid = e + self.W_pos[:seq]
        mask = torch.ones(seq, seq, dtype=torch.bool).tril()
        for layer, w in enumerate(self.layers):
            heads = w.W_Q.shape[0]
            inputs = []
            for part in "qkv":
                x = resid[:, :, None, :].expand(-1, -1, heads, -1)
                added = [deltas.get(f"L{layer}H{h}.{part}") for h in range(heads)]
                if any(a is not None for a in added):
                    x = x + torch.stack([torch.zeros_like(resid) if a is None else a for a in added], 2)
                inputs.append(self._ln(x, w.ln1))
            q = torch.einsum("bthd,hde->bthe", inputs[0], w.W_Q) + w.b_Q
            k = torch.einsum("bthd,hde->bthe", inputs[1], w.W_K) + w.b_K
            v = torch.einsum("bthd,hde->bthe", inputs[2], w.W_V) + w.b_V
            scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / self.scale
            pattern = torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)
            z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
            result = torch.einsum("bqhe,hed->bqhd", z, w.W_O)  # [N, T, H, d]
            for h in range(heads):
                writes[f"L{layer}H{h}"] = result[:, :, h]
            resid = resid + result.sum(2) + w.b_O
            if self.act is not None:
                x = resid + deltas[f"MLP{layer}.in"] if f"MLP{layer}.in" in deltas else resid
                out = self.act(self._ln(x, w.ln2) @ w.W_in + w.b_in) @ w.W_out + w.b_out
                writes[f"MLP{layer}"] = out
                resid = resid + out
        final = resid + deltas["logits"] if "logits" in deltas else resid
        return self._ln(final, self.ln_final) @ self.W_U + self.b_U, writes
