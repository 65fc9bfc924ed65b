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

from interp_icl.circuits.graph import unit_layer
from interp_icl.errors import require
from interp_icl.patching.fast_engine import (
    ACTIVATIONS,
    attention_scale,
    norm_params,
    read_layer,
    unsupported_reason,
)


class EdgeForward:
    def __init__(self, model: nn.Module):
        reason = unsupported_reason(model)
        require(reason is None, f"edge scores need a standard-layout model: {reason}")
        cfg = model.cfg
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

    def run(self, tokens: Tensor, deltas: dict[str, Tensor] | None = None, embed: Tensor | None = None,
            start: int = 0, resid: Tensor | None = None, record: dict[int, Tensor] | None = None,
            taps: dict[str, Tensor] | None = None, keep: tuple[frozenset[tuple[str, str]], dict[str, Tensor]] | None = None,
            head_writes: bool = True) -> tuple[Tensor, dict[str, Tensor]]:
        """(logits ``[N, T, V]``, {sender: its write ``[N, T, d]``}) with ``deltas`` {receiver:
        ``[N, T, d]``} added to the receivers' inputs and the token embedding replaced by
        `embed` ``[N, T, d]`` if given. With `start` > 0 the run begins at that layer from its
        residual input `resid` ``[N, T, d]`` (writes of earlier senders are then not returned; a
        `start` of n_layers computes only the logits). `record`, if given, receives each layer's
        residual input {layer: ``[N, T, d]``} and the final residual under key n_layers. `taps`, if
        given, receives a zero tensor with a gradient added to every layer's queries, keys and
        values ``[N, T, H, d_head]`` ({"0.q": ..., "0.k": ...}): `head_input_scores` turns their
        gradients into the first-order scores of the edges into the heads. `keep` = (kept edges as (sender, receiver)
        names, source writes {sender: ``[N, T, d]``}) runs a circuit: every edge not kept carries
        its sender's source value instead of its value in this run (ablation outside the circuit).
        `head_writes` False skips each head's own write (the heads' sum is one matrix product): for
        runs that need only the logits and the MLP writes, e.g. the gradient runs of EAP."""
        deltas = dict(deltas or {})
        diffs: dict[str, Tensor] = {}
        seq = tokens.shape[1]
        writes: dict[str, Tensor] = {}
        if start == 0:
            e = self.embed(tokens) if embed is None else embed
            writes["embed"] = e
            resid = e + self.W_pos[:seq]
        for layer, w in enumerate(self.layers):
            if layer < start:
                continue
            if record is not None:
                record[layer] = resid
            heads = w.W_Q.shape[0]
            if keep is not None:
                self._ablate_outside([f"L{layer}H{h}.{part}" for h in range(heads) for part in "qkv"],
                                     writes, keep, deltas, diffs)
            projected = []
            for part, weight, bias in (("q", w.W_Q, w.b_Q), ("k", w.W_K, w.b_K), ("v", w.W_V, w.b_V)):
                added = [deltas.get(f"L{layer}H{h}.{part}") for h in range(heads)]
                if any(a is not None for a in added):  # each head its own input
                    x = resid[:, :, None, :] + torch.stack([torch.zeros_like(resid) if a is None else a for a in added], 2)
                    projected.append(torch.einsum("bthd,hde->bthe", self._ln(x, w.ln1), weight) + bias)
                else:  # one input for every head
                    projected.append(torch.einsum("btd,hde->bthe", self._ln(resid, w.ln1), weight) + bias)
            q, k, v = projected
            if taps is not None:
                for part in "qkv":
                    taps[f"{layer}.{part}"] = torch.zeros_like(q, requires_grad=True)
                q, k, v = q + taps[f"{layer}.q"], k + taps[f"{layer}.k"], v + taps[f"{layer}.v"]
            # causal softmax(q k / scale) v, torch's fused kernel (forward and backward ~4x the einsums on CPU)
            z = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                               is_causal=True, scale=1.0 / self.scale).transpose(1, 2)
            if head_writes:
                result = torch.einsum("bqhe,hed->bqhd", z, w.W_O)  # [N, T, H, d]
                for h in range(heads):
                    writes[f"L{layer}H{h}"] = result[:, :, h]
                resid = resid + result.sum(2) + w.b_O
            else:  # one matrix product for all heads
                resid = resid + z.flatten(2) @ w.W_O.flatten(0, 1) + w.b_O
            if self.act is not None:
                if keep is not None:
                    self._ablate_outside([f"MLP{layer}.in"], writes, keep, deltas, diffs)
                x = resid + deltas[f"MLP{layer}.in"] if f"MLP{layer}.in" in deltas else resid
                out = self.act(self._ln(x, w.ln2) @ w.W_in + w.b_in) @ w.W_out + w.b_out
                writes[f"MLP{layer}"] = out
                resid = resid + out
        if record is not None:
            record[len(self.layers)] = resid
        if keep is not None:
            self._ablate_outside(["logits"], writes, keep, deltas, diffs)
        final = resid + deltas["logits"] if "logits" in deltas else resid
        return self._ln(final, self.ln_final) @ self.W_U + self.b_U, writes

    def _ablate_outside(self, receivers: list[str], writes: dict[str, Tensor],
                        keep: tuple[frozenset[tuple[str, str]], dict[str, Tensor]], deltas: dict[str, Tensor],
                        diffs: dict[str, Tensor]) -> None:
        """Add to each receiver's delta the source-minus-current value of every sender already
        written whose edge into it is not kept: one matrix product over the senders for all the
        receivers (`diffs` caches each sender's source-minus-current value within a run)."""
        kept, source = keep
        senders = list(writes)
        outside = torch.tensor([[(u, r) not in kept for u in senders] for r in receivers])  # [R, S]
        if not outside.any():
            return
        for u in senders:
            if u not in diffs:
                diffs[u] = source[u] - writes[u]
        stacked = torch.stack([diffs[u] for u in senders])  # [S, N, T, d]
        moved = torch.einsum("rs,sntd->rntd", outside.to(stacked.dtype), stacked)
        for i, r in enumerate(receivers):
            if outside[i].any():
                deltas[r] = deltas.get(r, 0) + moved[i]

    def stack_changes(self, changes: dict[str, Tensor]) -> dict[int, tuple[list[str], Tensor]]:
        """{layer: (the senders written before it, their changes ``[N, S, T, d]``)} from `changes`
        {sender: ``[N, T, d]``}, laid out for `head_input_scores` (computed once per EAP call)."""
        out = {}
        for layer in range(len(self.layers)):
            senders = [u for u in changes if _written_before(u, layer)]
            out[layer] = senders, torch.stack([changes[u] for u in senders], 1)
        return out

    def head_input_scores(self, residuals: dict[int, Tensor], tap_grads: dict[str, Tensor],
                          stacked: dict[int, tuple[list[str], Tensor]]) -> dict[tuple[str, str], Tensor]:
        """{(sender, "L{l}H{h}.q|k|v"): ``[N]`` sum over positions of change · d metric / d(that head's
        input)} for every sender written before layer l (`stacked`, from `stack_changes`), from the
        gradients of the taps of `run` and the residual inputs it recorded. The chain rule through the
        head's projection and its LayerNorm (input: the layer's residual input x) is taken on the
        sender's side: change · J_LN(x)^T W[h] ∂q_h = (J_LN(x) change) · (W[h] ∂q_h), so the
        LayerNorm is differentiated once per sender, not once per head input; the sum over positions
        and features is one batched matrix product per layer."""
        out: dict[tuple[str, str], Tensor] = {}
        for layer, w in enumerate(self.layers):
            senders, moved = stacked[layer]  # [N, S, T, d]
            if w.ln1 is not None:
                moved = self._ln_jvp(residuals[layer].detach()[:, None], moved, w.ln1[0])
            grads = torch.cat([tap_grads[f"{layer}.{part}"] for part in "qkv"], 2).transpose(1, 2)  # [N, 3H, T, dh]
            weights = torch.cat([w.W_Q, w.W_K, w.W_V])  # [3H, d, dh]
            pulled = grads @ weights.transpose(1, 2)  # [N, 3H, T, d]: W[k] ∂input_k at every position
            n, k = pulled.shape[:2]
            scores = torch.bmm(pulled.reshape(n, k, -1), moved.reshape(n, len(senders), -1).transpose(1, 2))  # [N, 3H, S]
            heads = w.W_Q.shape[0]
            for i, u in enumerate(senders):
                for j, part in enumerate("qkv"):
                    for h in range(heads):
                        out[(u, f"L{layer}H{h}.{part}")] = scores[:, j * heads + h, i]
        return out

    def _ln_jvp(self, x: Tensor, v: Tensor, gamma: Tensor) -> Tensor:
        """The LayerNorm's Jacobian at `x` (``[..., d]``, broadcast against `v`) applied to `v`
        ``[..., d]``: γ ⊙ (v − mean(v) − x̂ mean(v ⊙ x̂)) / σ, x̂ = (x − μ) / σ."""
        inverse_sigma = torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + self.eps)
        x_hat = (x - x.mean(-1, keepdim=True)) * inverse_sigma
        centred = torch.addcmul(v - v.mean(-1, keepdim=True), x_hat, (v * x_hat).mean(-1, keepdim=True), value=-1)
        return centred.mul_(gamma * inverse_sigma)


def _written_before(sender: str, layer: int) -> bool:
    """Whether a sender ("embed", "L0H1", "MLP0") writes before layer `layer`'s attention reads."""
    return sender == "embed" or unit_layer(sender) < layer
