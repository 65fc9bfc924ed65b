"""Linear self-attention (LSA) on in-context regression tokens (REFERENCE §5).

Input: tokens ``e`` ``[B, T, D]`` float, T = N + 1, D = d + 1: N context tokens e_i = (x_i, y_i)
followed by the query token (x_q, y_q^0) in the last position (y_q^0 = 0, or −W_0 x_q for the
gradient-descent construction from a nonzero W_0; see
`interp_icl.theory.linear_regression_gd.tokens`). Output of `forward`: the residual stream after
the last layer, ``[B, T, D]``. `predict` reads the **negated y-slot of the query token**,
ŷ = −e_q[-1] ``[B]`` (von Oswald et al.'s convention, ``h[:, -1, -1] * (-1.0)`` in their code;
Ahn et al. use the same sign).

Every layer l, with matrices acting on column vectors (the papers' convention, *not*
TransformerLens's ``x @ W_Q`` layout) and the query's own key/value excluded:

    e_j ← e_j + P_l · c · Σ_{i ∈ keys} (W_V,l e_i) (W_K,l e_i)ᵀ (W_Q,l e_j)     for every j,

    keys = the N context tokens (``include_query=False``, the default) or all N + 1 tokens;
    c    = 1 (``normalize=False``, the default; von Oswald: P carries the 1/N) or 1/N
           (Ahn et al.'s ``Output / N``; N = T − 1 in both key sets).

Every token, context tokens included, is updated (no causal mask), as in both reference codes.
With ``tied=True`` one set of (W_Q, W_K, W_V, P) is applied in every layer (von Oswald's
recurrent "deq" setting); the parameters are then stored with a leading dimension of 1.

Parameters live on the root module, stacked over layers: ``W_Q``, ``W_K`` ``[S, d_head, D]``,
``W_V``, ``P`` ``[S, D, D]`` with S = n_layers (or 1 when tied). Initialisation: independent
N(0, σ²) entries, σ² = init_variance / (n_layers · D), drawn from a `torch.Generator` — the
reference's ``VarianceScaling(0.002 / num_layers)`` (fan-in) with a plain instead of a truncated
normal.

Hook points (B tasks, T = N + 1 positions, D = d + 1, k = d_head; one head):
    blocks.{l}.hook_resid_pre          [B, T, D]
    blocks.{l}.attn.hook_q             [B, T, 1, k]   W_Q e_j
    blocks.{l}.attn.hook_k             [B, T, 1, k]   W_K e_i (the query's key is computed but
                                                      masked unless include_query)
    blocks.{l}.attn.hook_v             [B, T, 1, D]   W_V e_i
    blocks.{l}.attn.hook_attn_scores   [B, 1, T, T]   (W_K e_i)ᵀ(W_Q e_j) at [.., j, i]; the
                                                      query's column is 0 unless include_query
                                                      (the linear analogue of a −inf mask)
    blocks.{l}.attn.hook_pattern       [B, 1, T, T]   the weights applied to the values: the
                                                      scores times c (no softmax)
    blocks.{l}.attn.hook_z             [B, T, 1, D]   Σ_i pattern[j, i] W_V e_i
    blocks.{l}.hook_attn_out           [B, T, D]      P z_j
    blocks.{l}.hook_resid_post         [B, T, D]      e_j + P z_j
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp_icl.builtin_families import LSAConfig
from interp_icl.errors import ConfigError, require
from interp_icl.models.common import check_vectors
from interp_icl.seeding import seeded

WEIGHT_NAMES = ("W_Q", "W_K", "W_V", "P")


@dataclass
class LinearAttentionConfig:
    """Sizes and conventions of a `LinearSelfAttention`, exposed as ``model.cfg``.

    d_x: input dimension d (tokens have d_model = d + 1 entries).
    n_ctx: largest accepted T = N + 1, or None for any length.
    d_head: size of queries and keys, d_model when None.
    """

    d_x: int
    n_layers: int = 1
    include_query: bool = False
    normalize: bool = False
    tied: bool = False
    d_head: int | None = None
    init_variance: float = 0.002
    n_ctx: int | None = None
    n_heads: int = 1
    d_model: int = field(init=False)
    input: ClassVar[str] = "vectors"  # layout (`interp_icl.models.layout`)
    block_type: ClassVar[str] = "linear_attention"

    def __post_init__(self) -> None:
        require(self.d_x >= 1, f"d_x must be at least 1, got {self.d_x}")
        require(self.n_layers >= 1, f"n_layers must be at least 1, got {self.n_layers}")
        require(
            self.n_heads == 1, f"linear self-attention has one head, got n_heads={self.n_heads}"
        )
        require(self.init_variance >= 0, f"init_variance must be >= 0, got {self.init_variance}")
        require(
            self.n_ctx is None or self.n_ctx >= 2,
            f"n_ctx must be at least 2 (one context token and the query), got {self.n_ctx}",
        )
        self.d_model = self.d_x + 1
        if self.d_head is None:
            self.d_head = self.d_model
        require(self.d_head >= 1, f"d_head must be at least 1, got {self.d_head}")


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = _Attention()
        self.hook_resid_pre = HookPoint()
        self.hook_attn_out = HookPoint()
        self.hook_resid_post = HookPoint()


class LinearSelfAttention(HookedRootModule):
    """L layers of one-head linear self-attention with residual connections (module docstring)."""

    def __init__(self, cfg: LinearAttentionConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        n_sets = 1 if cfg.tied else cfg.n_layers
        d_model, d_head = cfg.d_model, cfg.d_head
        self.W_Q = nn.Parameter(torch.zeros(n_sets, d_head, d_model))
        self.W_K = nn.Parameter(torch.zeros(n_sets, d_head, d_model))
        self.W_V = nn.Parameter(torch.zeros(n_sets, d_model, d_model))
        self.P = nn.Parameter(torch.zeros(n_sets, d_model, d_model))
        self.blocks = nn.ModuleList([_Block() for _ in range(cfg.n_layers)])
        self.reset_parameters(generator)
        self.setup()

    # ----- parameters -------------------------------------------------------------------------
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Independent N(0, init_variance / (n_layers · d_model)) entries; `generator` defaults to
        ``seeded(0)`` so that a model is always reproducible."""
        if generator is None:
            generator = seeded(0)
        std = math.sqrt(self.cfg.init_variance / (self.cfg.n_layers * self.cfg.d_model))
        with torch.no_grad():
            for name in WEIGHT_NAMES:
                param = getattr(self, name)
                draw = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                param.copy_(draw * std)

    def layer_weights(self, layer: int) -> dict[str, Tensor]:
        """The matrices applied in block `layer` (the shared set when tied)."""
        s = 0 if self.cfg.tied else layer
        return {name: getattr(self, name)[s] for name in WEIGHT_NAMES}

    @classmethod
    def from_weights(
        cls,
        weights: Mapping[str, Tensor],
        *,
        n_layers: int | None = None,
        include_query: bool = False,
        normalize: bool = False,
        n_ctx: int | None = None,
    ) -> LinearSelfAttention:
        """A model with the given matrices (column-vector convention, see the module docstring).

        `weights` maps ``W_Q``, ``W_K`` (``[d_head, D]``), ``W_V`` and ``P`` (``[D, D]``) to one
        layer's matrices, or to ``[S, ...]`` stacks of S layers. `n_layers` defaults to S; a
        single set (S = 1) with ``n_layers > 1`` gives a tied model. The model takes the dtype
        of the weights.
        """
        missing = [name for name in WEIGHT_NAMES if name not in weights]
        require(not missing, f"weights lack {missing}; give W_Q, W_K, W_V and P")
        mats = {name: torch.as_tensor(weights[name]) for name in WEIGHT_NAMES}
        mats = {name: m[None] if m.ndim == 2 else m for name, m in mats.items()}
        for name, m in mats.items():
            require(
                m.ndim == 3,
                f"{name} must be [rows, cols] or [layers, rows, cols], got {tuple(m.shape)}",
            )
        n_sets, d_head, d_model = mats["W_Q"].shape
        expected = {
            "W_Q": (n_sets, d_head, d_model),
            "W_K": (n_sets, d_head, d_model),
            "W_V": (n_sets, d_model, d_model),
            "P": (n_sets, d_model, d_model),
        }
        for name, shape in expected.items():
            require(
                tuple(mats[name].shape) == shape,
                f"{name} has shape {tuple(mats[name].shape)}, expected {shape} to match W_Q",
            )
        require(d_model >= 2, f"tokens need d_model = d + 1 >= 2 entries, got {d_model}")
        n_layers = n_sets if n_layers is None else n_layers
        require(
            n_sets in (1, n_layers),
            f"got {n_sets} weight sets for n_layers={n_layers}; give 1 (tied) or {n_layers}",
            ConfigError,
        )
        cfg = LinearAttentionConfig(
            d_x=d_model - 1,
            n_layers=n_layers,
            include_query=include_query,
            normalize=normalize,
            tied=n_sets == 1 and n_layers > 1,
            d_head=d_head,
            n_ctx=n_ctx,
        )
        model = cls(cfg)
        dtype = mats["W_Q"].dtype
        require(dtype.is_floating_point, f"weights must be floating point, got {dtype}")
        model.to(dtype)
        with torch.no_grad():
            for name in WEIGHT_NAMES:
                getattr(model, name).copy_(mats[name].to(dtype))
        return model

    # ----- forward ----------------------------------------------------------------------------
    def _check_input(self, e: Tensor) -> Tensor:
        """``e`` ``[B, N+1, d+1]`` float (one context token and the query at least) in the
        weights' dtype; TokenError otherwise."""
        e = check_vectors(e, self.cfg.d_model, self.cfg.n_ctx, min_len=2)
        return e.to(self.W_Q.dtype)

    def _layer(self, layer: int, resid: Tensor) -> Tensor:
        cfg = self.cfg
        block = self.blocks[layer]
        w = self.layer_weights(layer)
        seq = resid.shape[1]
        q = block.attn.hook_q(torch.einsum("kd,btd->btk", w["W_Q"], resid)[:, :, None])
        k = block.attn.hook_k(torch.einsum("kd,btd->btk", w["W_K"], resid)[:, :, None])
        v = block.attn.hook_v(torch.einsum("ed,btd->bte", w["W_V"], resid)[:, :, None])
        scores = torch.einsum("bjhk,bihk->bhji", q, k)
        if not cfg.include_query:
            keep = torch.ones(seq, dtype=scores.dtype, device=scores.device)
            keep[-1] = 0.0
            scores = scores * keep
        scores = block.attn.hook_attn_scores(scores)
        scale = 1.0 / (seq - 1) if cfg.normalize else 1.0
        pattern = block.attn.hook_pattern(scores * scale)
        z = block.attn.hook_z(torch.einsum("bhji,bihe->bjhe", pattern, v))
        attn_out = block.hook_attn_out(torch.einsum("fe,bte->btf", w["P"], z[:, :, 0]))
        return block.hook_resid_post(resid + attn_out)

    def forward(self, e: Tensor) -> Tensor:
        """The residual stream after the last layer, ``[B, T, D]``."""
        resid = self._check_input(e)
        for layer in range(self.cfg.n_layers):
            resid = self._layer(layer, self.blocks[layer].hook_resid_pre(resid))
        return resid

    def predict(self, e: Tensor) -> Tensor:
        """ŷ ``[B]``: minus the query token's y-slot after the last layer."""
        return -self.forward(e)[:, -1, -1]

    def layer_predictions(self, e: Tensor) -> Tensor:
        """``[n_layers, B]``: the readout −e_q[-1] after each layer (the reference's
        intermediate readouts; row l is comparable with l + 1 GD steps)."""
        resid = self._check_input(e)
        out = []
        for layer in range(self.cfg.n_layers):
            resid = self._layer(layer, self.blocks[layer].hook_resid_pre(resid))
            out.append(-resid[:, -1, -1])
        return torch.stack(out)


def build_lsa(model: LSAConfig, d_vocab: int, n_ctx: int, seed: int) -> LinearSelfAttention:
    """The registered build function of the lsa family; `d_vocab` is the token width d + 1."""
    cfg = LinearAttentionConfig(
        d_x=d_vocab - 1, n_layers=model.n_layers, init_variance=model.init_variance, n_ctx=n_ctx
    )
    return LinearSelfAttention(cfg, seeded(seed))
