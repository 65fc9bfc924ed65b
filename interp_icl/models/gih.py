"""The generalized-induction-head model TF(M, H, d, D) of Chen, Sheen, Wang, Yang 2024 (REFERENCE §1).

Input: token ids ``[batch, T]``. Output: probabilities ``[batch, T, d]`` where **row t predicts
token t** from tokens 0..t-1 (the model never reads token t at position t: that is the paper's
query slot whose own token is zero). Row 0 has no context and is uniform.

Layer 1 (copier): H heads with relative-position-only scores over a window of M offsets,
    score_h(i, j) = w[h, i-j-1] for 1 <= i-j <= M, -inf otherwise (self excluded);
    v_i^h = sum_j softmax_j(score_h(i, j)) x_j (one-hot values), then v̄_i^h = v_i^h / ||v_i^h||.
    Boundary: the softmax always runs over all M offsets; offsets that reach before position 0
    point at an empty left pad with a zero value. The attention is then exactly translation
    invariant, and a sharp copier whose parent lies before the start outputs ~0 instead of
    copying a wrong token, so the sharp limit is exactly the S-gram estimator. The reference code
    instead renormalises over the offsets that exist; the two differ only at positions i < M,
    where rows of ``hook_pattern`` may sum to less than 1 here.
FFN (selector): for every subset S of heads with |S| <= D (∅ included) a weight c_S,
    p_S = c_S^2 / sum_S' c_S'^2, feature φ_i = concat_S sqrt(p_S) ⊗_{h∈S} v̄_i^h, so
    <φ_i, φ_j> = sum_S p_S prod_{h∈S} <v̄_i^h, v̄_j^h>.
Layer 2 (classifier): one head with scalar a, query = key = φ, value = one-hot token,
    ŷ_i = sum_{l<i} softmax_l(a <φ_i, φ_l>) x_l.

Hook points (TransformerLens names where the concept exists; shapes for T positions, B sequences,
H heads, d = vocabulary, F = feature size):
    hook_embed                         [B, T, d]      one-hot tokens
    blocks.0.attn.hook_attn_scores     [B, H, T, T]   -inf outside the window
    blocks.0.attn.hook_pattern         [B, H, T, T]
    blocks.0.attn.hook_z               [B, T, H, d]   head outputs v (before normalisation)
    blocks.0.attn.hook_z_normalized    [B, T, H, d]   v̄, unit norm (0 at position 0)
    blocks.0.hook_resid_post           [B, T, (H+1)d] concat(x_i, v̄_i^1, ..., v̄_i^H)
    blocks.0.mlp.hook_subset_weights   [n_subsets]    p_S, subsets in `model.subsets` order
    blocks.0.mlp.hook_feature          [B, T, F]      φ
    blocks.1.attn.hook_q, hook_k       [B, T, 1, F]   φ as query / key
    blocks.1.attn.hook_v               [B, T, 1, d]   one-hot tokens as values
    blocks.1.attn.hook_attn_scores     [B, 1, T, T]   a <q_i, k_l>, -inf for l >= i
    blocks.1.attn.hook_pattern         [B, 1, T, T]
    blocks.1.attn.hook_z               [B, T, 1, d]   ŷ (row 0 replaced by uniform in the output)

Layer-1 attention is batch-independent and banded, so without hooks on its scores or pattern it
is computed on the band only (M offsets instead of T keys); with such hooks the dense
``[B, H, T, T]`` tensors are materialised so hooks can read and edit them.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp_icl.builtin_families import GIHFamilyConfig
from interp_icl.models.common import check_tokens
from interp_icl.seeding import generator

_NORM_EPS = 1e-6
MAX_CODES = 4096  # largest (d+1)^M for which forward_last uses the window-code kernel
PARAM_GROUPS = ("rpe", "ffn", "a")


@dataclass
class GIHConfig:
    """Sizes of TF(M, H, d, D), exposed as ``model.cfg`` with TransformerLens field names."""

    d_vocab: int
    n_ctx: int
    n_heads: int = 3
    window: int = 3
    max_degree: int = 2
    n_layers: int = 2
    w_plus: float = 3.0
    w_minus: float = 0.1
    c_init: float = 0.01
    a_init: float = 0.01
    rpe_noise: float = 0.0
    seed: int = 0
    # the layout analysis code reads (`interp_icl.models.layout`); window and max_degree above too
    output: ClassVar[str] = "probs"
    target_offset: ClassVar[int] = 0
    feature_hook: ClassVar[str] = "blocks.0.mlp.hook_feature"
    attn_scores: ClassVar[str] = "hook"
    direct_path: ClassVar[bool] = False
    last_forward: ClassVar[str] = "forward_last"
    block_type: ClassVar[str] = "gih"


def feature_unit(subset: tuple[int, ...]) -> str:
    """The name of the FFN feature of a head subset in the edge graph (`interp_icl.circuits`):
    "F[0,1]" for heads {0, 1}."""
    return "F[" + ",".join(map(str, subset)) + "]"


def head_subsets(n_heads: int, max_degree: int) -> list[tuple[int, ...]]:
    """All subsets of heads of size <= max_degree: ∅ first, then by size, then lexicographic."""
    return [s for k in range(max_degree + 1) for s in itertools.combinations(range(n_heads), k)]


def safe_softmax(scores: Tensor) -> Tensor:
    """Softmax over the last dim; rows that are entirely -inf give all-zero weights."""
    has_key = torch.isfinite(scores).any(-1, keepdim=True)
    weights = torch.softmax(torch.where(has_key, scores, torch.zeros_like(scores)), dim=-1)
    return weights * has_key


class _Layer1Attention(nn.Module):
    def __init__(self, n_heads: int, window: int):
        super().__init__()
        self.w_rpe = nn.Parameter(torch.zeros(n_heads, window))  # w[h, r-1]: score of offset r
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()
        self.hook_z_normalized = HookPoint()


class _FFN(nn.Module):
    def __init__(self, n_subsets: int):
        super().__init__()
        self.c = nn.Parameter(torch.zeros(n_subsets))
        self.hook_subset_weights = HookPoint()
        self.hook_feature = HookPoint()


class _Layer2Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.zeros(()))
        self.hook_q = HookPoint()
        self.hook_k = HookPoint()
        self.hook_v = HookPoint()
        self.hook_attn_scores = HookPoint()
        self.hook_pattern = HookPoint()
        self.hook_z = HookPoint()


class _Block(nn.Module):
    def __init__(self, attn: nn.Module, mlp: nn.Module | None = None):
        super().__init__()
        self.attn = attn
        if mlp is not None:
            self.mlp = mlp
            self.hook_resid_post = HookPoint()


class GIHModel(HookedRootModule):
    """TF(M, H, d, D) as a TransformerLens HookedRootModule (see the module docstring)."""

    def __init__(self, cfg: GIHConfig):
        super().__init__()
        self.cfg = cfg
        self.subsets = head_subsets(cfg.n_heads, cfg.max_degree)
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList(
            [
                _Block(_Layer1Attention(cfg.n_heads, cfg.window), _FFN(len(self.subsets))),
                _Block(_Layer2Attention()),
            ]
        )
        self.reset_parameters()
        self.setup()

    # ----- parameters -------------------------------------------------------------------------
    def reset_parameters(self) -> None:
        """The reference code's initialisation: head h prefers offset h+1 (w_plus there,
        w_minus elsewhere), every c_S = c_init, a = a_init; then N(0, rpe_noise^2) added to every
        position logit (drawn with `cfg.seed`; nothing is drawn when rpe_noise is 0)."""
        cfg = self.cfg
        with torch.no_grad():
            w = torch.full((cfg.n_heads, cfg.window), cfg.w_minus)
            for h in range(min(cfg.n_heads, cfg.window)):
                w[h, h] = cfg.w_plus
            if cfg.rpe_noise > 0:
                noise = torch.randn(w.shape, generator=generator(cfg.seed, "gih-rpe-init"))
                w = w + cfg.rpe_noise * noise
            self.w_rpe.copy_(w)
            self.c.fill_(cfg.c_init)
            self.a.fill_(cfg.a_init)

    @property
    def w_rpe(self) -> nn.Parameter:
        return self.blocks[0].attn.w_rpe

    @property
    def c(self) -> nn.Parameter:
        return self.blocks[0].mlp.c

    @property
    def a(self) -> nn.Parameter:
        return self.blocks[1].attn.a

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameter groups for staged training: RPE weights, FFN weights c_S, scalar a."""
        return {"rpe": [self.w_rpe], "ffn": [self.c], "a": [self.a]}

    def subset_weights(self) -> Tensor:
        """p_S = c_S^2 / sum c^2, ``[n_subsets]`` in `self.subsets` order."""
        c2 = self.c**2
        return c2 / c2.sum()

    def heads_in_layer(self, layer: int) -> int:
        """Attention heads of block `layer`: cfg.n_heads copiers in layer 1, one head in layer 2."""
        return self.cfg.n_heads if layer == 0 else 1

    @property
    def feature_size(self) -> int:
        return sum(self.cfg.d_vocab ** len(s) for s in self.subsets)

    def feature_slices(self) -> list[tuple[tuple[int, ...], slice]]:
        """(subset S, its block of φ ``[..., F]``) for every subset, in `self.subsets` order."""
        out, start = [], 0
        for subset in self.subsets:
            size = self.cfg.d_vocab ** len(subset)
            out.append((subset, slice(start, start + size)))
            start += size
        return out

    # ----- layer 1 ----------------------------------------------------------------------------
    def _dense_scores(self, seq: int) -> Tensor:
        """Dense layer-1 scores ``[H, T, T]``: w[h, i-j-1] for 1 <= i-j <= M, -inf elsewhere."""
        pos = torch.arange(seq, device=self.w_rpe.device)
        rel = pos[:, None] - pos[None, :]
        valid = (rel >= 1) & (rel <= self.cfg.window)
        gathered = self.w_rpe[:, (rel - 1).clamp(0, self.cfg.window - 1)]
        return torch.where(valid, gathered, torch.full_like(gathered, -math.inf))

    def _pad_logit(self, seq: int) -> Tensor:
        """``[H, T, 1]`` log of the softmax mass on offsets that reach before position 0."""
        offsets = torch.arange(1, self.cfg.window + 1, device=self.w_rpe.device)
        before_start = offsets[None, :] > torch.arange(seq, device=self.w_rpe.device)[:, None]
        logits = self.w_rpe[:, None, :].expand(-1, seq, -1)
        masked = torch.where(before_start, logits, torch.full_like(logits, -math.inf))
        return torch.logsumexp(masked, dim=-1, keepdim=True)

    def _layer1(self, x: Tensor) -> Tensor:
        """Head outputs v ``[B, T, H, d]`` from one-hot tokens ``[B, T, d]``."""
        attn = self.blocks[0].attn
        batch, seq, _ = x.shape
        if attn.hook_attn_scores.has_hooks() or attn.hook_pattern.has_hooks():
            scores = attn.hook_attn_scores(self._dense_scores(seq).expand(batch, -1, -1, -1).clone())
            with_pad = torch.cat([scores, self._pad_logit(seq).expand(batch, -1, -1, -1)], dim=-1)
            pattern = attn.hook_pattern(safe_softmax(with_pad)[..., :seq])
            return torch.einsum("bhij,bjd->bihd", pattern, x)
        return _banded_copy(self.w_rpe, x)

    # ----- FFN --------------------------------------------------------------------------------
    def _features(self, v_bar: Tensor, p: Tensor) -> Tensor:
        """φ ``[B, T, F]`` = concat_S sqrt(p_S) ⊗_{h∈S} v̄^h."""
        batch, seq, _, d = v_bar.shape
        parts = []
        for k, subset in enumerate(self.subsets):
            f = torch.ones(batch, seq, 1, dtype=v_bar.dtype, device=v_bar.device)
            for h in subset:
                f = (f[..., :, None] * v_bar[:, :, h, None, :]).reshape(batch, seq, -1)
            parts.append(torch.sqrt(p[k]) * f)
        return torch.cat(parts, dim=-1)

    # ----- forward ----------------------------------------------------------------------------
    def forward(self, tokens: Tensor) -> Tensor:
        """Probabilities ``[B, T, d]``; row t is the law of token t given tokens < t."""
        cfg = self.cfg
        tokens = check_tokens(tokens, cfg.d_vocab, cfg.n_ctx)
        batch, seq = tokens.shape
        b0, b1 = self.blocks[0], self.blocks[1]
        x = self.hook_embed(F.one_hot(tokens, cfg.d_vocab).to(self.w_rpe.dtype))

        v = b0.attn.hook_z(self._layer1(x))
        v_bar = b0.attn.hook_z_normalized(_unit(v))
        resid = b0.hook_resid_post(torch.cat([x, v_bar.flatten(2)], dim=-1))
        v_bar = resid[..., cfg.d_vocab :].reshape(batch, seq, cfg.n_heads, cfg.d_vocab)

        p = b0.mlp.hook_subset_weights(self.subset_weights())
        phi = b0.mlp.hook_feature(self._features(v_bar, p))

        q = b1.attn.hook_q(phi[:, :, None, :])
        k = b1.attn.hook_k(phi[:, :, None, :])
        val = b1.attn.hook_v(x[:, :, None, :])
        scores = self.a * torch.einsum("bihf,bjhf->bhij", q, k)
        causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril(-1)
        scores = b1.attn.hook_attn_scores(scores.masked_fill(~causal, -math.inf))
        pattern = b1.attn.hook_pattern(safe_softmax(scores))
        z = b1.attn.hook_z(torch.einsum("bhij,bjhd->bihd", pattern, val))
        probs = z[:, :, 0, :]
        uniform = torch.full_like(probs[:, :1], 1.0 / cfg.d_vocab)
        return torch.cat([uniform, probs[:, 1:]], dim=1)

    def forward_last(self, tokens: Tensor) -> Tensor:
        """Probabilities ``[B, d]`` of the last row only, without hooks (the training fast path).

        Equals ``forward(tokens)[:, -1]``. A position's layer-1 output depends only on its window
        tuple (x_{i-1}, ..., x_{i-M}), one of C = (d+1)^M codes (d marks the empty pad), so
        layers 1 and FFN reduce to a ``[C, C]`` kernel K[u, u'] = <φ_u, φ_u'> and layer 2 to
        counts n[b, u, k] of (code, token) pairs among the keys:
            ŷ_k = sum_u n[u, k] exp(a K[u_q, u]) / sum_u n[u] exp(a K[u_q, u]).
        Cost O(B T + B C d) instead of O(B T H M d). Falls back to per-position features when
        C > MAX_CODES.
        """
        cfg = self.cfg
        tokens = check_tokens(tokens, cfg.d_vocab, cfg.n_ctx)
        if (cfg.d_vocab + 1) ** cfg.window > MAX_CODES:
            return self._forward_last_by_position(tokens)
        d, n_codes = cfg.d_vocab, (cfg.d_vocab + 1) ** cfg.window
        codes = window_codes(tokens, d, cfg.window)  # [B, T]
        pair = codes[:, :-1] * d + tokens[:, :-1]
        counts = torch.zeros(tokens.shape[0], n_codes * d, dtype=self.w_rpe.dtype, device=tokens.device)
        counts.scatter_add_(1, pair, torch.ones_like(pair, dtype=counts.dtype))
        counts = counts.view(-1, n_codes, d)  # n[b, u, k]
        present = counts.sum(-1) > 0
        scores = self.a * self.window_kernel()[codes[:, -1]]  # [B, C]
        scores = scores.masked_fill(~present, -math.inf)
        weights = torch.softmax(scores, dim=-1)  # per code, before multiplicity
        num = torch.einsum("bu,buk->bk", weights, counts)
        return num / num.sum(-1, keepdim=True)

    def window_kernel(self) -> Tensor:
        """K ``[C, C]``: <φ_u, φ_u'> for window codes u, u' (see `window_codes`)."""
        cfg = self.cfg
        d, window = cfg.d_vocab, cfg.window
        n_codes = (d + 1) ** window
        code = torch.arange(n_codes, device=self.w_rpe.device)
        digits = torch.stack([(code // (d + 1) ** r) % (d + 1) for r in range(window)], dim=-1)
        onehot = F.one_hot(digits, d + 1)[..., :d].to(self.w_rpe.dtype)  # pad -> zero vector
        v = torch.einsum("hr,urd->uhd", torch.softmax(self.w_rpe, dim=-1), onehot)
        v_bar = _unit(v)  # [C, H, d]
        gram = torch.einsum("uhd,vhd->huv", v_bar, v_bar)  # [H, C, C]
        p = self.subset_weights()
        kernel = torch.zeros(n_codes, n_codes, dtype=v.dtype, device=v.device)
        for k, subset in enumerate(self.subsets):
            term = torch.ones_like(kernel)
            for h in subset:
                term = term * gram[h]
            kernel = kernel + p[k] * term
        return kernel

    def _forward_last_by_position(self, tokens: Tensor) -> Tensor:
        x = F.one_hot(tokens, self.cfg.d_vocab).to(self.w_rpe.dtype)
        v_bar = _unit(_banded_copy(self.w_rpe, x))  # [B, T, H, d]
        head_sims = torch.einsum("bhd,blhd->blh", v_bar[:, -1], v_bar[:, :-1])  # [B, T-1, H]
        p = self.subset_weights()
        sim = torch.zeros_like(head_sims[..., 0])
        for k, subset in enumerate(self.subsets):
            term = torch.ones_like(sim)
            for h in subset:
                term = term * head_sims[..., h]
            sim = sim + p[k] * term
        weights = torch.softmax(self.a * sim, dim=-1)  # [B, T-1]
        return torch.einsum("bl,bld->bd", weights, x[:, :-1])


def window_codes(tokens: Tensor, d_vocab: int, window: int) -> Tensor:
    """Code of each position's window, ``[B, T]`` in [0, (d+1)^M):
    u_i = sum_{r=1..M} digit_r (d+1)^(r-1), digit_r = x_{i-r}, or d (empty pad) when i-r < 0."""
    seq = tokens.shape[1]
    codes = torch.zeros_like(tokens)
    for r in range(1, window + 1):
        digit = torch.full_like(tokens, d_vocab)
        digit[:, r:] = tokens[:, : max(seq - r, 0)]
        codes += digit * (d_vocab + 1) ** (r - 1)
    return codes


def _banded_copy(w_rpe: Tensor, x: Tensor) -> Tensor:
    """v[b, i, h] = sum_r softmax(w_rpe[h])_r x[b, i-r] with x = 0 before position 0.

    w_rpe ``[H, M]``, x ``[B, T, d]`` -> ``[B, T, H, d]``; O(B T H M d) instead of O(B H T^2 d).
    """
    seq, window = x.shape[1], w_rpe.shape[1]
    weights = torch.softmax(w_rpe, dim=-1)  # [H, M], the same at every position
    shifted = torch.stack([F.pad(x, (0, 0, r, 0))[:, :seq] for r in range(1, window + 1)], dim=2)
    return torch.einsum("hm,bimd->bihd", weights, shifted)


def _unit(v: Tensor) -> Tensor:
    """v / sqrt(||v||^2 + eps^2) over the last dim (eps = 1e-6): unit length for every convex
    combination of one-hot tokens (norm >= 1/sqrt(d)), ~0 for a head whose mass lies on the
    empty left pad, and finite gradients at v = 0."""
    return v / torch.sqrt((v * v).sum(-1, keepdim=True) + _NORM_EPS**2)


def build_gih(model: GIHFamilyConfig, d_vocab: int, n_ctx: int, seed: int) -> GIHModel:
    """The registered build function of the gih family (the seed draws only the optional RPE
    noise; the reference initialisation is deterministic)."""
    cfg = GIHConfig(
        d_vocab=d_vocab,
        n_ctx=n_ctx,
        n_heads=model.n_heads,
        window=model.window,
        max_degree=model.max_degree,
        w_plus=model.w_plus,
        w_minus=model.w_minus,
        c_init=model.c_init,
        a_init=model.a_init,
        rpe_noise=model.rpe_noise,
        seed=seed,
    )
    return GIHModel(cfg)
