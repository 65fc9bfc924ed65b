"""Implicit weight update of an attention + MLP block (REFERENCE §4, Dherin et al. 2025).

For one pre-LN TransformerLens block at layer l and one query position q of each sequence:

  x    block input ``blocks.{l}.hook_resid_pre`` at q (embeddings + earlier blocks)
  A(S) attention output at q (``b_O`` included) when the query sees only the key positions S
  h_C  = x + A({0..q})       (with context: the normal causal attention)
  h_0  = x + A({q})          (without context: the query attends only to itself)
  z    = LN2(h)              (the MLP input; z = h when the model has no LayerNorm)
  MLP(z) = W_out f(W z + b_in) + b_out,  W = W_inᵀ [d_mlp, d_model]  (W acts on the column z)

The context's effect on the block is moved into the weights:

  ΔZ = z_C − z_0,  ΔW = (W ΔZ) z_0ᵀ / ‖z_0‖²  (rank 1, [d_mlp, d_model]),  so (W + ΔW) z_0 = W z_C;
  ΔA = h_C − h_0 = A({0..q}) − A({q})         (the skip connection's share, added to b_out).

Then the block run *without* context with W + ΔW and b_out + ΔA gives exactly the block output
with context: h_0 + MLP_{W+ΔW, b_out+ΔA}(z_0) = h_0 + ΔA + MLP(z_C) = h_C + MLP(z_C). A block
without the MLP's skip connection (the source's block, T_W = M_W ∘ A: the block output is
MLP(z) alone; the regression family with ``mlp_skip=False``) needs no bias shift: ΔA is set to 0
and MLP_{W+ΔW}(z_0) = MLP(z_C) (`BlockWeights.mlp_skip`). ΔW is what
to add to the ``nn.Linear`` weight of the MLP's input layer; in TransformerLens orientation (to add
to ``W_in`` ``[d_model, d_mlp]``) it is ΔWᵀ (`ImplicitUpdate.delta_w_in`).

Token by token: with the query seeing only the first i context positions, S_i = {0..i-1} ∪ {q}
(i = 0..q; S_0 = {q} is "without context", S_q the full causal context), z_i = LN2(x + A(S_i)),
ΔW(i) = (W (z_i − z_0)) z_0ᵀ / ‖z_0‖², W_i = W + ΔW(i), bias shift ΔA_i = A(S_i) − A({q}) (0
without the MLP skip). The
reference's gradient form W_i = W_{i-1} − h ∇L_i (h = 1/‖z_0‖², L_i(W) = tr(Δ_iᵀ W),
Δ_i = W(z_{i-1} − z_i) z_0ᵀ) telescopes to the same W_i. The step norms
‖ΔW(i) − ΔW(i-1)‖_F = ‖W (z_i − z_{i-1})‖ / ‖z_0‖ are reported for i = 1..q. Masked positions
keep their place: every key keeps its own position (embedding or rotary angle), the query keeps q.

The attention at q for a key set S is recomputed from the block's weights (``W_Q, W_K, W_V, W_O``,
``b_Q..b_O``, ``ln1``/``ln2`` weights; rotary angles from the block's rotary module) on the cached
``hook_resid_pre``. Supported blocks: those `interp_icl.models.standard` builds — LayerNorm or no
norm, standard or rotary positions, a non-gated MLP with relu / gelu / gelu_new / silu, causal
attention. Anything else (attention-only blocks, the gih model, RMS norms, gated MLPs, GQA, soft
caps) raises InterpICLError. The regression family `block`
(`interp_icl.models.regression_block.RegressionBlock`: TransformerLens parameter and hook names, no
positional embedding) is supported too; its inputs are float vectors ``[B, T, d + 1]``
(`RegressionTask.model_input`), those of TransformerLens models integer tokens ``[B, T]``.
Use float64 (``model.double()``) for exactness checks: the identity
is exact in exact arithmetic, so the measured difference is rounding (float64 ~1e-16, float32
~1e-7).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for
from interp_icl.analysis.result import PassResult, make_table, row
from interp_icl.errors import InterpICLError, require
from interp_icl.models import layout

ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


@dataclass(frozen=True)
class BlockWeights:
    """One pre-LN attention + MLP block in TransformerLens orientation (detached tensors).

    ``W_Q/W_K/W_V`` ``[H, d_model, d_head]``, ``b_Q/b_K/b_V`` ``[H, d_head]``, ``W_O``
    ``[H, d_head, d_model]``, ``b_O`` ``[d_model]``; ``W_in`` ``[d_model, d_mlp]``, ``b_in``
    ``[d_mlp]``, ``W_out`` ``[d_mlp, d_model]``, ``b_out`` ``[d_model]``; LayerNorm gains/biases
    ``[d_model]`` or None (no norm). `attn_scale` divides q·k; `rotary` is the block's rotary
    module (``apply_rope(q, k)`` on ``[B, H, T, d_head]``) or None for standard positions.
    `mlp_skip`: the block output is h + MLP(LN2(h)) (True: TransformerLens blocks, the regression
    family's default) or MLP(LN2(h)) alone (False: the source's block), h = x + attention.
    """

    W_Q: Tensor
    W_K: Tensor
    W_V: Tensor
    W_O: Tensor
    b_Q: Tensor
    b_K: Tensor
    b_V: Tensor
    b_O: Tensor
    W_in: Tensor
    b_in: Tensor
    W_out: Tensor
    b_out: Tensor
    ln1_w: Tensor | None
    ln1_b: Tensor | None
    ln2_w: Tensor | None
    ln2_b: Tensor | None
    eps: float
    attn_scale: float
    act: Callable[[Tensor], Tensor]
    rotary: nn.Module | None
    mlp_skip: bool = True

    def ln1(self, x: Tensor) -> Tensor:
        return _layer_norm(x, self.ln1_w, self.ln1_b, self.eps)

    def ln2(self, x: Tensor) -> Tensor:
        return _layer_norm(x, self.ln2_w, self.ln2_b, self.eps)

    def mlp(self, z: Tensor, delta_w_in: Tensor | None = None) -> Tensor:
        """MLP output ``[B, d_model]`` of inputs z ``[B, d_model]``; with `delta_w_in`
        ``[B, d_model, d_mlp]`` each row uses its own input weight W_in + delta_w_in[b]."""
        pre = z @ self.W_in + self.b_in
        if delta_w_in is not None:
            pre = pre + torch.einsum("bd,bdm->bm", z, delta_w_in)
        return self.act(pre) @ self.W_out + self.b_out

    def output(self, h: Tensor, mlp_out: Tensor) -> Tensor:
        """Block output ``[..., d_model]`` from the residual after attention h and the MLP output
        (both ``[..., d_model]``): h + mlp_out with the MLP skip connection, else mlp_out."""
        return h + mlp_out if self.mlp_skip else mlp_out


def _layer_norm(x: Tensor, w: Tensor | None, b: Tensor | None, eps: float) -> Tensor:
    if w is None:
        return x
    centred = x - x.mean(-1, keepdim=True)
    return centred / torch.sqrt(centred.pow(2).mean(-1, keepdim=True) + eps) * w + b


def _unsupported(model: nn.Module, why: str) -> InterpICLError:
    return InterpICLError(
        "implicit_update supports pre-LN attention + MLP TransformerLens blocks (standard "
        f"family); {type(model).__name__} {why}"
    )


UNSUPPORTED_BLOCKS = {  # layout block_type -> why the pass cannot run
    "gih": "is the gih model, whose blocks are not attention + MLP blocks",
    "linear_attention": "is linear self-attention: its blocks have no MLP",
}


def _check_block_type(model: nn.Module) -> None:
    kind = layout(model).block_type
    if kind != "transformer":
        raise _unsupported(model, UNSUPPORTED_BLOCKS.get(kind, f"has {kind!r} blocks"))


def block_weights(model: nn.Module, layer: int) -> BlockWeights:
    """The weights of block `layer`; InterpICLError for a block type the pass does not support."""
    _check_block_type(model)
    cfg = getattr(model, "cfg", None)
    blocks = getattr(model, "blocks", None)
    if cfg is None or blocks is None:
        raise _unsupported(model, "has no cfg / blocks")
    require(
        0 <= layer < cfg.n_layers,
        f"layer must be in [0, {cfg.n_layers - 1}], got {layer}",
        InterpICLError,
    )
    checks = [
        (not getattr(cfg, "attn_only", False), "is attention-only: its blocks have no MLP"),
        (
            getattr(cfg, "normalization_type", None) in ("LN", None),
            "uses a norm other than LN/none",
        ),
        (not getattr(cfg, "gated_mlp", False), "has a gated MLP"),
        (not getattr(cfg, "parallel_attn_mlp", False), "has parallel attention and MLP"),
        (getattr(cfg, "n_key_value_heads", None) in (None, cfg.n_heads), "uses grouped KV heads"),
        (getattr(cfg, "attn_scores_soft_cap", -1.0) <= 0, "soft-caps attention scores"),
        (getattr(cfg, "attention_dir", "causal") == "causal", "has non-causal attention"),
        (
            getattr(cfg, "positional_embedding_type", "standard") in ("standard", "rotary", "none"),
            "uses positions other than standard/rotary/none",
        ),
        ((cfg.act_fn or "gelu").lower() in ACTIVATIONS, f"has activation {cfg.act_fn!r}"),
    ]
    for ok, why in checks:
        if not ok:
            raise _unsupported(model, why)
    block = blocks[layer]
    attn, mlp = block.attn, block.mlp
    rotary = None
    if cfg.positional_embedding_type == "rotary":
        core = getattr(attn, "original_component", None)
        rotary = getattr(core, "rotary", None)
        if rotary is None or not hasattr(rotary, "apply_rope"):
            raise _unsupported(model, "is rotary but its attention exposes no rotary module")
    has_norm = cfg.normalization_type == "LN"
    use_scale, scale = getattr(cfg, "use_attn_scale", True), float(getattr(cfg, "attn_scale", -1.0))
    with torch.no_grad():

        def get(module: nn.Module, name: str) -> Tensor:
            return getattr(module, name).detach()

        return BlockWeights(
            **{n: get(attn, n) for n in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O")},
            **{n: get(mlp, n) for n in ("W_in", "b_in", "W_out", "b_out")},
            ln1_w=get(block.ln1, "w") if has_norm else None,
            ln1_b=get(block.ln1, "b") if has_norm else None,
            ln2_w=get(block.ln2, "w") if has_norm else None,
            ln2_b=get(block.ln2, "b") if has_norm else None,
            eps=float(cfg.eps),
            attn_scale=scale if use_scale and scale > 0 else math.sqrt(cfg.d_head),
            act=ACTIVATIONS[(cfg.act_fn or "gelu").lower()],
            rotary=rotary,
            mlp_skip=bool(getattr(cfg, "mlp_skip", True)),
        )


def attention_at_query(
    weights: BlockWeights, resid_pre: Tensor, query_pos: int, visible: Tensor
) -> Tensor:
    """Attention output (``b_O`` included) at `query_pos` for several sets of visible keys.

    resid_pre: block input ``[B, T, d_model]`` (T > query_pos); visible: ``[M, query_pos + 1]``
    bool, row m the key positions the query may see (each row must include the query itself).
    Returns ``[B, M, d_model]``. Keys keep their positions (rotary angles, position embeddings).
    """
    q = query_pos
    require(
        bool(visible[:, q].all()), "every visible-key set must include the query", InterpICLError
    )
    x = weights.ln1(resid_pre[:, : q + 1])  # [B, q+1, d]
    queries = torch.einsum("btd,hde->bhte", x, weights.W_Q) + weights.b_Q[:, None]
    keys = torch.einsum("btd,hde->bhte", x, weights.W_K) + weights.b_K[:, None]
    values = torch.einsum("btd,hde->bhte", x, weights.W_V) + weights.b_V[:, None]
    if weights.rotary is not None:
        queries, keys = weights.rotary.apply_rope(queries, keys)
    # scores [B, H, q+1] of the query against every key, then [B, M, H, q+1] per visible-key set
    scores = torch.einsum("bhe,bhke->bhk", queries[:, :, q], keys) / weights.attn_scale
    scores = scores[:, None].masked_fill(~visible[None, :, None, :], float("-inf"))
    pattern = torch.softmax(scores, dim=-1)
    z = torch.einsum("bmhk,bhke->bmhe", pattern, values)
    return torch.einsum("bmhe,hed->bmd", z, weights.W_O) + weights.b_O


def check_inputs(model: nn.Module, tokens: Tensor) -> Tensor:
    """The pass's inputs after the model's own checks: integer token ids ``[B, T]`` (int64) for
    TransformerLens-style models, float vectors ``[B, T, d + 1]`` (in the model's dtype) for the
    regression `block` family."""
    _check_block_type(model)
    if layout(model).input == "vectors":
        return model.check_input(tokens)
    return check_tokens_for(model, tokens)


def block_input(model: nn.Module, tokens: Tensor, layer: int) -> tuple[Tensor, Tensor]:
    """(``blocks.{layer}.hook_resid_pre``, ``blocks.{layer}.hook_resid_post``), both
    ``[B, T, d_model]`` in the model's dtype, from one normal forward."""
    names = (f"blocks.{layer}.hook_resid_pre", f"blocks.{layer}.hook_resid_post")
    with torch.no_grad():
        _, cache = model.run_with_cache(tokens, names_filter=lambda n: n in names)
    return cache[names[0]].detach(), cache[names[1]].detach()


def _query_index(tokens: Tensor, query_pos: int) -> int:
    seq = tokens.shape[1]
    require(
        -seq <= query_pos < seq,
        f"query_pos {query_pos} outside sequences of length {seq}",
        InterpICLError,
    )
    q = query_pos % seq
    require(
        q >= 1, "query_pos must have at least one context token before it (q >= 1)", InterpICLError
    )
    return q


@dataclass
class ImplicitUpdate:
    """The implicit update of block `layer` at `query_pos` (all vectors at the query; B sequences).

    resid_pre x, attn_with_context A(C, x), attn_without_context A(x), bias_shift ΔA = their
    difference (0 for a block without the MLP skip), mlp_in_with_context z_C,
    mlp_in_without_context z_0: ``[B, d_model]``.
    delta_w ΔW = (W ΔZ) z_0ᵀ/‖z_0‖² ``[B, d_mlp, d_model]`` (orientation of W = W_inᵀ, which acts
    on z).
    output_with_context h_C + MLP(z_C); output_updated h_0 + MLP with W + ΔW and b_out + ΔA on z_0;
    output_without_context h_0 + MLP(z_0) (no update): ``[B, d_model]`` from the weights (without
    the MLP skip the h terms drop: MLP(z_C), MLP_{W+ΔW}(z_0), MLP(z_0)).
    resid_post: TransformerLens's ``blocks.{layer}.hook_resid_post`` at q from a normal forward
    ``[B, d_model]`` (the real block output with context).
    """

    layer: int
    query_pos: int
    resid_pre: Tensor
    attn_with_context: Tensor
    attn_without_context: Tensor
    bias_shift: Tensor
    mlp_in_with_context: Tensor
    mlp_in_without_context: Tensor
    delta_w: Tensor
    output_with_context: Tensor
    output_updated: Tensor
    output_without_context: Tensor
    resid_post: Tensor

    @property
    def delta_w_in(self) -> Tensor:
        """ΔW in TransformerLens orientation ``[B, d_model, d_mlp]`` (add to ``W_in``)."""
        return self.delta_w.transpose(-1, -2)


def rank_one_update(weights: BlockWeights, z_0: Tensor, z_context: Tensor) -> Tensor:
    """ΔW = (W (z_context − z_0)) z_0ᵀ / ‖z_0‖² ``[B, d_mlp, d_model]`` for z ``[B, d_model]``."""
    left = (z_context - z_0) @ weights.W_in  # W ΔZ as a row: [B, d_mlp]
    right = z_0 / z_0.pow(2).sum(-1, keepdim=True)
    return left[:, :, None] * right[:, None, :]


def implicit_weight_update(
    model: nn.Module, tokens: Tensor, layer: int = 0, query_pos: int = -1
) -> ImplicitUpdate:
    """ΔW and ΔA of block `layer` at `query_pos` for each sequence of `tokens` (``[B, T]`` token
    ids, or ``[B, T, d + 1]`` vectors for the regression block; see `check_inputs`)."""
    tokens = check_inputs(model, tokens)
    weights = block_weights(model, layer)
    q = _query_index(tokens, query_pos)
    resid_pre, resid_post = block_input(model, tokens, layer)
    visible = torch.ones(2, q + 1, dtype=torch.bool, device=resid_pre.device)
    visible[1, :q] = False  # row 0: full causal context; row 1: the query alone
    attn = attention_at_query(weights, resid_pre, q, visible)  # [B, 2, d]
    x = resid_pre[:, q]
    h_context, h_alone = x + attn[:, 0], x + attn[:, 1]
    z_context, z_alone = weights.ln2(h_context), weights.ln2(h_alone)
    delta_w = rank_one_update(weights, z_alone, z_context)
    bias_shift = attn[:, 0] - attn[:, 1]  # the MLP skip carries h_C − h_0 = ΔA to the output
    if not weights.mlp_skip:
        bias_shift = torch.zeros_like(bias_shift)  # no skip: nothing but MLP(z) reaches the output
    return ImplicitUpdate(
        layer=layer,
        query_pos=q,
        resid_pre=x,
        attn_with_context=attn[:, 0],
        attn_without_context=attn[:, 1],
        bias_shift=bias_shift,
        mlp_in_with_context=z_context,
        mlp_in_without_context=z_alone,
        delta_w=delta_w,
        output_with_context=weights.output(h_context, weights.mlp(z_context)),
        output_updated=weights.output(
            h_alone, weights.mlp(z_alone, delta_w.transpose(-1, -2)) + bias_shift
        ),
        output_without_context=weights.output(h_alone, weights.mlp(z_alone)),
        resid_post=resid_post[:, q],
    )


@dataclass
class ContextSteps:
    """Token-by-token updates at `query_pos` = q: the query sees context 0..i-1 and itself.

    update_left u_i = W (z_i − z_0) ``[B, q+1, d_mlp]`` (i = 0..q, u_0 = 0) and update_right
    z_0/‖z_0‖² ``[B, d_model]``: ΔW(i) = u_i update_rightᵀ (materialise with `delta_w`).
    bias_shift ΔA_i = A(S_i) − A({q}) ``[B, q+1, d_model]`` (0 without the MLP skip); mlp_in z_i
    ``[B, q+1, d_model]``.
    step_norms ‖ΔW(i) − ΔW(i-1)‖_F ``[B, q]`` for i = 1..q (column i-1).
    """

    layer: int
    query_pos: int
    update_left: Tensor
    update_right: Tensor
    bias_shift: Tensor
    mlp_in: Tensor
    step_norms: Tensor

    def delta_w(self, i: int) -> Tensor:
        """ΔW(i) ``[B, d_mlp, d_model]`` after consuming the first i context tokens."""
        return self.update_left[:, i, :, None] * self.update_right[:, None, :]


def token_by_token_updates(
    model: nn.Module, tokens: Tensor, layer: int = 0, query_pos: int = -1
) -> ContextSteps:
    """ΔW(i) and ΔA_i for i = 0..q context tokens at `query_pos` of each sequence of `tokens`
    (``[B, T]`` ids or ``[B, T, d + 1]`` regression vectors)."""
    tokens = check_inputs(model, tokens)
    weights = block_weights(model, layer)
    q = _query_index(tokens, query_pos)
    resid_pre, _ = block_input(model, tokens, layer)
    index = torch.arange(q + 1, device=resid_pre.device)
    visible = (index[None, :] < index[:, None]) | (index[None, :] == q)  # row i: keys 0..i-1, q
    attn = attention_at_query(weights, resid_pre, q, visible)  # [B, q+1, d]
    z = weights.ln2(resid_pre[:, q, None] + attn)  # [B, q+1, d]
    z_0 = z[:, 0]
    left = (z - z_0[:, None]) @ weights.W_in  # [B, q+1, d_mlp]
    norm_0 = z_0.norm(dim=-1)
    steps = (left[:, 1:] - left[:, :-1]).norm(dim=-1) / norm_0[:, None]
    return ContextSteps(
        layer=layer,
        query_pos=q,
        update_left=left,
        update_right=z_0 / norm_0[:, None].pow(2),
        bias_shift=attn - attn[:, :1] if weights.mlp_skip else torch.zeros_like(attn),
        mlp_in=z,
        step_norms=steps,
    )


def log_log_slope(values: Tensor) -> float:
    """Least-squares slope of log(values[i-1]) against log(i), i = 1..n, for positive values
    ``[n]`` (n >= 2)."""
    require(values.dim() == 1 and len(values) >= 2, "need at least two values", InterpICLError)
    require(bool((values > 0).all()), "log-log slope needs positive values", InterpICLError)
    x = torch.log(torch.arange(1, len(values) + 1, dtype=torch.float64))
    y = torch.log(values.double())
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


@dataclass(frozen=True)
class StepNormSlope:
    """Log-log slope of the mean step norm against the context size i, with a bootstrap over
    tasks: `slope` (of the mean over all tasks), `stderr` (standard deviation of the bootstrap
    slopes), `low`/`high` (percentile interval at `level`), `n_tasks`, `n_boot`."""

    slope: float
    stderr: float
    low: float
    high: float
    level: float
    n_tasks: int
    n_boot: int

    @property
    def significantly_negative(self) -> bool:
        """The slope's whole interval lies below 0."""
        return self.high < 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "slope": self.slope,
            "stderr": self.stderr,
            "low": self.low,
            "high": self.high,
            "level": self.level,
            "n_tasks": self.n_tasks,
            "n_boot": self.n_boot,
        }


def step_norm_slope(
    step_norms: Tensor, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> StepNormSlope:
    """The log-log slope of the mean step norm ‖ΔW(i) − ΔW(i−1)‖_F against i = 1..q and its
    bootstrap interval.

    step_norms: ``[B, q]`` (`ContextSteps.step_norms`, one row per task, q >= 2, B >= 2). The
    slope is fitted to log(mean over tasks) vs log(i); `n_boot` resamples of the tasks (with
    replacement, from a generator seeded with `seed`) give the stderr and the percentile interval.
    Tasks are the independent unit: the steps of one task are correlated across i, so a
    regression standard error over the q points would be too small.
    """
    require(
        step_norms.dim() == 2,
        f"step_norms must be [B, q], got {tuple(step_norms.shape)}",
        InterpICLError,
    )
    n_tasks, q = step_norms.shape
    require(
        n_tasks >= 2 and q >= 2,
        f"need B >= 2 tasks and q >= 2 steps, got {n_tasks}, {q}",
        InterpICLError,
    )
    require(n_boot >= 10, f"n_boot must be at least 10, got {n_boot}", InterpICLError)
    require(0 < level < 1, f"level must be in (0, 1), got {level}", InterpICLError)
    steps = step_norms.detach().double().cpu()
    slope = log_log_slope(steps.mean(0))
    draws = torch.randint(
        0, n_tasks, (n_boot, n_tasks), generator=torch.Generator().manual_seed(seed)
    )
    means = steps[draws].mean(1)  # [n_boot, q]
    x = torch.log(torch.arange(1, q + 1, dtype=torch.float64))
    x = x - x.mean()
    y = torch.log(means)
    boot = ((y - y.mean(-1, keepdim=True)) * x).sum(-1) / (x * x).sum()  # [n_boot]
    tail = (1 - level) / 2
    low, high = torch.quantile(boot, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return StepNormSlope(
        slope=slope,
        stderr=float(boot.std()),
        low=float(low),
        high=float(high),
        level=level,
        n_tasks=n_tasks,
        n_boot=n_boot,
    )


def query_alone_output(model: nn.Module, tokens: Tensor, update: ImplicitUpdate) -> Tensor:
    """TransformerLens's own block output at the update's query when the query sees only itself.

    Runs the model with hooks: ``blocks.{l}.attn.hook_pattern`` row q becomes one-hot on q (every
    head); ``blocks.{l}.mlp.hook_pre`` at q gets ΔW z added (z the MLP input the
    model computes, read at ``blocks.{l}.mlp.hook_in``) — i.e. the input weight is W + ΔW — and
    ``blocks.{l}.hook_mlp_out`` at q gets ΔA (the output-bias shift). Returns
    ``blocks.{l}.hook_resid_post`` at q ``[B, d_model]``. Layer and position come from `update`;
    `no_update_output` is the same run without ΔW and ΔA.
    """
    tokens = check_inputs(model, tokens)
    return _hooked_output(model, tokens, update.layer, update.query_pos, update)


def no_update_output(model: nn.Module, tokens: Tensor, layer: int, query_pos: int) -> Tensor:
    """Like `query_alone_output` with ΔW = 0 and ΔA = 0 (the block simply loses its context)."""
    tokens = check_inputs(model, tokens)
    return _hooked_output(model, tokens, layer, _query_index(tokens, query_pos), None)


def _hooked_output(
    model: nn.Module, tokens: Tensor, layer: int, q: int, update: ImplicitUpdate | None
) -> Tensor:
    base = f"blocks.{layer}."
    seen: dict[str, Tensor] = {}

    def alone(pattern: Tensor, hook) -> Tensor:
        pattern = pattern.clone()
        pattern[:, :, q] = 0.0
        pattern[:, :, q, q] = 1.0
        return pattern

    def read_mlp_in(z: Tensor, hook) -> None:
        seen["z"] = z[:, q]

    def add_delta_w(pre: Tensor, hook) -> Tensor:
        pre = pre.clone()
        pre[:, q] += torch.einsum("bd,bdm->bm", seen["z"], update.delta_w_in.to(pre.dtype))
        return pre

    def add_bias_shift(out: Tensor, hook) -> Tensor:
        out = out.clone()
        out[:, q] += update.bias_shift.to(out.dtype)
        return out

    def read_resid_post(resid: Tensor, hook) -> None:
        seen["out"] = resid[:, q].detach()

    hooks = [(base + "attn.hook_pattern", alone)]
    if update is not None:
        hooks += [
            (base + "mlp.hook_in", read_mlp_in),
            (base + "mlp.hook_pre", add_delta_w),
            (base + "hook_mlp_out", add_bias_shift),
        ]
    hooks.append((base + "hook_resid_post", read_resid_post))
    missing = [name for name, _ in hooks if name not in model.hook_dict]
    require(not missing, f"model has no hook(s) {', '.join(missing)}", InterpICLError)
    with torch.no_grad():
        model.run_with_hooks(tokens, fwd_hooks=hooks)
    return seen["out"]


def relative_difference(actual: Tensor, reference: Tensor) -> Tensor:
    """‖actual − reference‖ / ‖reference‖ per row, ``[B, d] -> [B]`` (float64)."""
    return (actual - reference).double().norm(dim=-1) / reference.double().norm(dim=-1)


def implicit_update(
    model: nn.Module,
    tokens: Tensor,
    layer: int = 0,
    query_pos: int = -1,
    token_by_token: bool = True,
) -> PassResult:
    """The implicit-weight-update pass on `tokens` at block `layer`, query `query_pos`.

    `tokens`: integer ids ``[B, T]`` for TransformerLens models; for the regression block, float
    vectors ``[B, T, d + 1]`` (`RegressionTask.model_input`: the query's y slot 0).

    Table metrics (per sequence; mean ± stderr over sequences), unit ``"L{layer} q={q}"``:
      * relative_difference: ‖T_{W+ΔW}(x) − T_W(C, x)‖ / ‖T_W(C, x)‖, both block outputs from
        TransformerLens (normal forward vs. the query alone with the update applied through hooks,
        see `query_alone_output`); rounding level (float64 ~1e-15, float32 ~1e-7) when exact;
      * relative_difference_no_update: the same without ΔW and ΔA (how much the context matters);
      * recompute_error: relative difference of the from-the-weights output with context and
        TransformerLens's ``hook_resid_post`` (checks the recomputation);
      * delta_w_rank (numerical rank, tolerance max(d_mlp, d_model)·eps·σ_1; 0 when ΔW is
        numerically zero, σ_1 <= max(d_mlp, d_model)·eps·‖W_in‖_F, e.g. a rotary model's query
        whose context only repeats its own token), delta_w_singular_ratio σ_2/σ_1 (NaN when ΔW is
        zero), delta_w_norm ‖ΔW‖_F, delta_w_relative_norm ‖ΔW‖_F/‖W_in‖_F, bias_shift_norm ‖ΔA‖;
      * with `token_by_token`, step_norm ‖ΔW(i) − ΔW(i-1)‖_F, one row per context size i = 1..q
        (unit ``"L{layer} q={q} i={i}"``, column ``context_size``).
    Summary: max_relative_difference, mean_relative_difference_no_update, max_recompute_error,
    delta_w_rank (largest over sequences), max_delta_w_singular_ratio, n_zero_updates (sequences
    whose ΔW is numerically zero), mean norms, dtype and, with `token_by_token`, step_norms (mean
    over sequences, i = 1..q), step_norms_non_increasing and (when q >= 2, B >= 2 and every mean
    step is positive) step_norm_slope with its 95% bootstrap interval over sequences
    step_norm_slope_interval (`step_norm_slope`).
    """
    tokens = check_inputs(model, tokens)
    update = implicit_weight_update(model, tokens, layer, query_pos)
    q = update.query_pos
    rel = relative_difference(query_alone_output(model, tokens, update), update.resid_post)
    rel_none = relative_difference(no_update_output(model, tokens, layer, q), update.resid_post)
    recompute = relative_difference(update.output_with_context, update.resid_post)
    w_norm = block_weights(model, layer).W_in.double().norm()
    singular = torch.linalg.svdvals(update.delta_w.double())  # [B, min(d_mlp, d_model)]
    tol = max(update.delta_w.shape[-2:]) * torch.finfo(update.delta_w.dtype).eps
    zero = singular[:, 0] <= tol * w_norm  # ΔW numerically zero: the context changed nothing
    rank = torch.where(zero, 0, (singular > tol * singular[:, :1]).sum(-1)).double()
    ratio = torch.where(zero, math.nan, singular[:, 1] / singular[:, 0])  # NaN: dropped from means
    dw_norm = update.delta_w.double().flatten(1).norm(dim=-1)
    bias_norm = update.bias_shift.double().norm(dim=-1)

    unit, labels = f"L{layer} q={q}", {"layer": layer, "query_pos": q}
    rows = [
        row(unit, "relative_difference", rel, **labels),
        row(unit, "relative_difference_no_update", rel_none, **labels),
        row(unit, "recompute_error", recompute, **labels),
        row(unit, "delta_w_rank", rank, **labels),
        row(unit, "delta_w_singular_ratio", ratio, **labels),
        row(unit, "delta_w_norm", dw_norm, **labels),
        row(unit, "delta_w_relative_norm", dw_norm / w_norm, **labels),
        row(unit, "bias_shift_norm", bias_norm, **labels),
    ]
    summary = {
        "layer": layer,
        "query_pos": q,
        "n_sequences": int(tokens.shape[0]),
        "dtype": str(update.delta_w.dtype).removeprefix("torch."),
        "max_relative_difference": float(rel.max()),
        "mean_relative_difference_no_update": float(rel_none.mean()),
        "max_recompute_error": float(recompute.max()),
        "delta_w_rank": int(rank.max()),
        "max_delta_w_singular_ratio": float(ratio.nan_to_num(0.0).max()),
        "n_zero_updates": int(zero.sum()),
        "mean_delta_w_norm": float(dw_norm.mean()),
        "mean_bias_shift_norm": float(bias_norm.mean()),
    }
    if token_by_token:
        steps = token_by_token_updates(model, tokens, layer, q).step_norms.double()  # [B, q]
        for i in range(1, q + 1):
            rows.append(
                row(f"{unit} i={i}", "step_norm", steps[:, i - 1], **labels, context_size=i)
            )
        mean_steps = steps.mean(0)
        summary["step_norms"] = [float(s) for s in mean_steps]
        summary["step_norms_non_increasing"] = bool((mean_steps[1:] <= mean_steps[:-1]).all())
        if q >= 2 and steps.shape[0] >= 2 and bool((steps.mean(0) > 0).all()):
            fit = step_norm_slope(steps)
            summary["step_norm_slope"] = fit.slope
            summary["step_norm_slope_interval"] = [fit.low, fit.high]
    return PassResult("implicit_update", make_table(rows), summary)
