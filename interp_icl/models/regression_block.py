"""A softmax transformer block on in-context regression tokens (REFERENCE §4, Dherin et al. 2025).

Input: tokens ``e`` ``[B, T, D]`` float, T = N + 1, D = d + 1: the N context tokens
e_i = (x_i, y_i) followed by the query (x_q, 0) in the last position (what
`interp_icl.tasks.regression.RegressionTask.model_input` gives). The model, with row vectors
and TransformerLens's orientation (``x @ W``):

    r_t   = e_t W_E + b_E                                   (embedding, ``[B, T, d_model]``)
    then `n_layers` (default 1) pre-LN blocks, each
    r_t  ← r_t + Attn(LN1(r))_t                               softmax, causal, H heads
    r_t  ← r_t + f(LN2(r_t) W_in + b_in) W_out + b_out       MLP, f = act_fn (relu by default)
    ŷ_t   = r_t W_U + b_U                                   (linear readout, ``[B, T]``)

With ``mlp_skip=False`` (Dherin et al.'s block, T_W = M_W ∘ A, REFERENCE §4) the MLP line is
r_t ← f(LN2(r_t) W_in + b_in) W_out + b_out: the MLP output replaces the stream instead of being
added to it; the attention keeps its skip connection. The default (``mlp_skip=True``) is this
project's extension.

`predict` returns ŷ at the query (the last position), ``[B]``; `forward` returns the readout of
every position ``[B, T]`` (only the query's is trained). With ``norm="none"`` LN1 and LN2 are the
identity. There is no final norm before the readout.

**No positional embedding.** The regression sequence is a set of examples: their order carries
no information, causal attention lets the query (last) see every example, and the readout is
taken at the query, so the model never needs to know where a token sits. The query is also
distinguishable by content (its y slot is 0). Without positions, the block run on the query
token alone (a length-1 sequence) is exactly Dherin et al.'s block *without context*, T_W(x):
the query then attends only to itself. Dherin et al.'s experiment uses one such block.

Parameters (TransformerLens names and orientation, so that
`interp_icl.analysis.implicit_update.block_weights` reads them as it reads a TransformerLens
block): ``embed.W_E`` ``[D, d_model]``, ``embed.b_E`` ``[d_model]``; per block
``blocks.{l}.attn.W_Q/W_K/W_V`` ``[H, d_model, d_head]``, ``b_Q/b_K/b_V`` ``[H, d_head]``,
``W_O`` ``[H, d_head, d_model]``, ``b_O`` ``[d_model]``; ``blocks.{l}.mlp.W_in``
``[d_model, d_mlp]``, ``b_in`` ``[d_mlp]``, ``W_out`` ``[d_mlp, d_model]``, ``b_out``
``[d_model]``; ``blocks.{l}.ln1.w/b``, ``ln2.w/b`` ``[d_model]`` (LN only); ``unembed.W_U``
``[d_model, 1]``, ``unembed.b_U`` ``[1]``. Initialisation (from a `torch.Generator`): weight
entries N(0, 1/fan_in) (fan_in = D for W_E, d_model for W_Q/W_K/W_V/W_in/W_U, H·d_head for W_O,
d_mlp for W_out), W_U and W_O additionally scaled by 0.5; biases 0; LN gains 1.

Hook points (B tasks, T = N + 1 positions, H heads, k = d_head):
    hook_embed                           [B, T, d_model]   e W_E + b_E
    blocks.{l}.hook_resid_pre            [B, T, d_model]
    blocks.{l}.ln1.hook_scale            [B, T, 1]         sqrt(var + eps) (LN only)
    blocks.{l}.ln1.hook_normalized       [B, T, d_model]   (LN only; same for ln2)
    blocks.{l}.attn.hook_q / hook_k / hook_v   [B, T, H, k]
    blocks.{l}.attn.hook_attn_scores     [B, H, T, T]      q·k / sqrt(k), -inf above the diagonal
    blocks.{l}.attn.hook_pattern         [B, H, T, T]      softmax over keys
    blocks.{l}.attn.hook_z               [B, T, H, k]
    blocks.{l}.hook_attn_out             [B, T, d_model]   Σ_h z_h W_O[h] + b_O
    blocks.{l}.hook_resid_mid            [B, T, d_model]
    blocks.{l}.mlp.hook_in               [B, T, d_model]   the MLP input z = LN2(resid_mid)
    blocks.{l}.mlp.hook_pre              [B, T, d_mlp]     z W_in + b_in
    blocks.{l}.mlp.hook_post             [B, T, d_mlp]     f(pre)
    blocks.{l}.hook_mlp_out              [B, T, d_model]   post W_out + b_out
    blocks.{l}.hook_resid_post           [B, T, d_model]   resid_mid + mlp_out (mlp_skip) or mlp_out
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp_icl.builtin_families import BlockConfig
from interp_icl.errors import require
from interp_icl.models.common import check_vectors
from interp_icl.seeding import seeded

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


@dataclass
class RegressionBlockConfig:
    """Sizes and conventions of a `RegressionBlock`, exposed as ``model.cfg``.

    d_x: input dimension d (tokens have D = d + 1 entries). n_ctx: largest accepted T = N + 1, or
    None for any length. normalization_type: "LN" (pre-LN blocks) or None (no norm). mlp_skip:
    whether the MLP output is added to the stream (True) or replaces it (False, the source's block).
    The remaining fields are fixed and exist so that code written for TransformerLens configs
    (`interp_icl.analysis.implicit_update.block_weights`) reads this model the same way.
    """

    d_x: int
    d_model: int = 64
    n_heads: int = 2
    d_head: int = 32
    d_mlp: int = 128
    n_layers: int = 1
    normalization_type: str | None = "LN"
    act_fn: str = "relu"
    n_ctx: int | None = None
    eps: float = 1e-5
    mlp_skip: bool = True
    d_input: int = field(init=False)
    positional_embedding_type: str = field(default="none", init=False)
    attention_dir: str = field(default="causal", init=False)
    attn_only: bool = field(default=False, init=False)
    gated_mlp: bool = field(default=False, init=False)
    parallel_attn_mlp: bool = field(default=False, init=False)
    n_key_value_heads: int | None = field(default=None, init=False)
    attn_scores_soft_cap: float = field(default=-1.0, init=False)
    use_attn_scale: bool = field(default=True, init=False)
    attn_scale: float = field(init=False)
    input: ClassVar[str] = "vectors"  # layout (`interp_icl.models.layout`)

    def __post_init__(self) -> None:
        require(self.d_x >= 1, f"d_x must be at least 1, got {self.d_x}")
        for name in ("d_model", "n_heads", "d_head", "d_mlp", "n_layers"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be at least 1, got {value}")
        require(
            self.normalization_type in ("LN", None),
            f"normalization_type must be 'LN' or None, got {self.normalization_type!r}",
        )
        require(
            self.act_fn in ACTIVATIONS,
            f"act_fn must be one of {', '.join(ACTIVATIONS)}, got {self.act_fn!r}",
        )
        require(
            self.n_ctx is None or self.n_ctx >= 1,
            f"n_ctx must be at least 1 (the query alone), got {self.n_ctx}",
        )
        self.d_input = self.d_x + 1
        self.attn_scale = math.sqrt(self.d_head)


class _LayerNorm(nn.Module):
    """TransformerLens's LayerNorm: (x − mean) / sqrt(var + eps) · w + b over the last axis."""

    def __init__(self, d_model: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.w = nn.Parameter(torch.ones(d_model))
        self.b = nn.Parameter(torch.zeros(d_model))
        self.hook_scale = HookPoint()
        self.hook_normalized = HookPoint()

    def forward(self, x: Tensor) -> Tensor:
        x = x - x.mean(-1, keepdim=True)
        scale = self.hook_scale((x.pow(2).mean(-1, keepdim=True) + self.eps).sqrt())
        return self.hook_normalized(x / scale) * self.w + self.b


class _Attention(nn.Module):
    def __init__(self, cfg: RegressionBlockConfig) -> None:
        super().__init__()
        h, d, k = cfg.n_heads, cfg.d_model, cfg.d_head
        self.scale = cfg.attn_scale
        self.W_Q = nn.Parameter(torch.zeros(h, d, k))
        self.W_K = nn.Parameter(torch.zeros(h, d, k))
        self.W_V = nn.Parameter(torch.zeros(h, d, k))
        self.W_O = nn.Parameter(torch.zeros(h, k, d))
        self.b_Q = nn.Parameter(torch.zeros(h, k))
        self.b_K = nn.Parameter(torch.zeros(h, k))
        self.b_V = nn.Parameter(torch.zeros(h, k))
        self.b_O = nn.Parameter(torch.zeros(d))
        for name in ("q", "k", "v", "attn_scores", "pattern", "z"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, x: Tensor) -> Tensor:
        """Causal softmax attention of ``x`` ``[B, T, d_model]`` -> ``[B, T, d_model]``."""
        q = self.hook_q(torch.einsum("btd,hdk->bthk", x, self.W_Q) + self.b_Q)
        k = self.hook_k(torch.einsum("btd,hdk->bthk", x, self.W_K) + self.b_K)
        v = self.hook_v(torch.einsum("btd,hdk->bthk", x, self.W_V) + self.b_V)
        scores = torch.einsum("bqhk,bshk->bhqs", q, k) / self.scale
        seq = x.shape[1]
        future = torch.ones(seq, seq, dtype=torch.bool, device=x.device).triu(1)
        scores = self.hook_attn_scores(scores.masked_fill(future, float("-inf")))
        pattern = self.hook_pattern(torch.softmax(scores, dim=-1))
        z = self.hook_z(torch.einsum("bhqs,bshk->bqhk", pattern, v))
        return torch.einsum("bqhk,hkd->bqd", z, self.W_O) + self.b_O


class _MLP(nn.Module):
    def __init__(self, cfg: RegressionBlockConfig) -> None:
        super().__init__()
        self.act = ACTIVATIONS[cfg.act_fn]
        self.W_in = nn.Parameter(torch.zeros(cfg.d_model, cfg.d_mlp))
        self.b_in = nn.Parameter(torch.zeros(cfg.d_mlp))
        self.W_out = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.d_model))
        self.b_out = nn.Parameter(torch.zeros(cfg.d_model))
        self.hook_in = HookPoint()
        self.hook_pre = HookPoint()
        self.hook_post = HookPoint()

    def forward(self, z: Tensor) -> Tensor:
        pre = self.hook_pre(self.hook_in(z) @ self.W_in + self.b_in)
        return self.hook_post(self.act(pre)) @ self.W_out + self.b_out


class _Block(nn.Module):
    def __init__(self, cfg: RegressionBlockConfig) -> None:
        super().__init__()
        if cfg.normalization_type == "LN":
            self.ln1 = _LayerNorm(cfg.d_model, cfg.eps)
            self.ln2 = _LayerNorm(cfg.d_model, cfg.eps)
        else:
            self.ln1 = nn.Identity()
            self.ln2 = nn.Identity()
        self.attn = _Attention(cfg)
        self.mlp = _MLP(cfg)
        self.mlp_skip = cfg.mlp_skip
        for name in ("resid_pre", "attn_out", "resid_mid", "mlp_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        resid = self.hook_resid_mid(resid + self.hook_attn_out(self.attn(self.ln1(resid))))
        mlp_out = self.hook_mlp_out(self.mlp(self.ln2(resid)))
        return self.hook_resid_post(resid + mlp_out if self.mlp_skip else mlp_out)


class _Embed(nn.Module):
    def __init__(self, d_input: int, d_model: int) -> None:
        super().__init__()
        self.W_E = nn.Parameter(torch.zeros(d_input, d_model))
        self.b_E = nn.Parameter(torch.zeros(d_model))


class _Unembed(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.W_U = nn.Parameter(torch.zeros(d_model, 1))
        self.b_U = nn.Parameter(torch.zeros(1))


class RegressionBlock(HookedRootModule):
    """Linear embedding, `n_layers` pre-LN softmax attention + MLP blocks, linear readout of ŷ
    (module docstring)."""

    def __init__(self, cfg: RegressionBlockConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.embed = _Embed(cfg.d_input, cfg.d_model)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layers)])
        self.unembed = _Unembed(cfg.d_model)
        self.reset_parameters(generator)
        self.setup()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Weights N(0, gain²/fan_in) (gain 0.5 for W_O and W_U, else 1), biases 0, LN gains 1;
        `generator` defaults to ``seeded(0)``."""
        if generator is None:
            generator = seeded(0)
        cfg = self.cfg
        fan_in = {
            "W_E": cfg.d_input,
            "W_Q": cfg.d_model,
            "W_K": cfg.d_model,
            "W_V": cfg.d_model,
            "W_O": cfg.n_heads * cfg.d_head,
            "W_in": cfg.d_model,
            "W_out": cfg.d_mlp,
            "W_U": cfg.d_model,
        }
        gain = {"W_O": 0.5, "W_U": 0.5}
        with torch.no_grad():
            for name, param in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf in fan_in:
                    draw = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                    param.copy_(draw * gain.get(leaf, 1.0) / math.sqrt(fan_in[leaf]))
                elif leaf == "w":
                    param.fill_(1.0)
                else:
                    param.zero_()

    def check_input(self, e: Tensor) -> Tensor:
        """``e`` ``[B, T, d + 1]`` float -> the same in the model's dtype; TokenError otherwise."""
        e = check_vectors(e, self.cfg.d_input, self.cfg.n_ctx)
        return e.to(self.embed.W_E.dtype)

    def residual(self, e: Tensor) -> Tensor:
        """The residual stream after the last block ``[B, T, d_model]``."""
        resid = self.hook_embed(self.check_input(e) @ self.embed.W_E + self.embed.b_E)
        for block in self.blocks:
            resid = block(resid)
        return resid

    def forward(self, e: Tensor) -> Tensor:
        """The readout ŷ_t of every position ``[B, T]`` (position T − 1 is the query's)."""
        return (self.residual(e) @ self.unembed.W_U + self.unembed.b_U)[..., 0]

    def predict(self, e: Tensor) -> Tensor:
        """ŷ at the query (last position) ``[B]``."""
        return self.forward(e)[:, -1]


def build_block(model: BlockConfig, d_vocab: int, n_ctx: int, seed: int) -> RegressionBlock:
    """The registered build function of the block family; `d_vocab` is the token width d + 1."""
    cfg = RegressionBlockConfig(
        d_x=d_vocab - 1,
        d_model=model.d_model,
        n_heads=model.n_heads,
        d_head=model.d_head,
        d_mlp=model.d_mlp,
        n_layers=model.n_layers,
        normalization_type=None if model.norm == "none" else "LN",
        act_fn=model.act_fn,
        n_ctx=n_ctx,
        mlp_skip=model.mlp_skip,
    )
    return RegressionBlock(cfg, seeded(seed))
