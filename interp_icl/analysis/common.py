"""What every pass needs from a model, through the hook contract of DESIGN.md only.

A model qualifies if it has ``cfg.d_vocab`` / ``cfg.n_ctx``, ``run_with_cache`` and TransformerLens
hook names: ``blocks.{l}.attn.hook_pattern`` / ``hook_attn_scores`` ``[B, head, query, key]``,
``blocks.{l}.attn.hook_z`` / ``hook_q`` / ``hook_k`` ``[B, pos, head, d]``. The standard family
(a TransformerBridge), the gih family and a user's own TransformerBridge all do. What differs
between them (output logits or probabilities, target offset, layer-1 window, which hook holds
the compared feature) is read from the model's cfg through `interp_icl.models.layout`.

Position conventions. Row i of a model's output predicts token ``t = i + target_offset`` (1 for
TransformerLens logits, 0 for the gih model, whose row t is the query slot of token t). Offsets
that are compared with a task's parent set are always *parent offsets*: distances back from the
token being predicted (query side) or being copied (key side). A layer-1 head at position i that
attends to i - r therefore copies parent offset ``r + target_offset`` of the target predicted at i.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

from interp_icl.errors import InterpICLError, require
from interp_icl.models import layout, log_probs_from_logits, next_token_log_probs, target_offset
from interp_icl.models.common import check_tokens

__all__ = [
    "ActivationMemo",
    "attention_scores",
    "check_tokens_for",
    "hook_cache",
    "layout",
    "next_token_log_probs",
    "resample_one_position",
    "target_log_probs",
    "target_offset",
]


def check_tokens_for(model: nn.Module, tokens: Tensor) -> Tensor:
    """Tokens as int64 ``[B, T]`` after the model's range and length checks."""
    return check_tokens(tokens, model.cfg.d_vocab, model.cfg.n_ctx)


class ActivationMemo:
    """Shares forward passes between analysis passes that read the same sequences.

    Holds, per token tensor seen (compared by value), the activations computed so far. A forward
    caches the requested hooks plus every hook in `extra` the model has, so one forward per
    distinct token batch serves all passes. Use one memo per model.
    """

    def __init__(self, extra: Iterable[str] = ()):
        self.extra = list(dict.fromkeys(extra))
        self.entries: list[tuple[Tensor, dict[str, Tensor]]] = []

    def lookup(self, tokens: Tensor) -> dict[str, Tensor] | None:
        for stored, acts in self.entries:
            if stored.shape == tokens.shape and torch.equal(stored, tokens):
                return acts
        return None


def hook_cache(
    model: nn.Module,
    tokens: Tensor,
    names: Iterable[str],
    chunk_size: int = 512,
    memo: ActivationMemo | None = None,
) -> dict[str, Tensor]:
    """Activations of the named hooks ``{name: [B, ...]}`` (float32, detached), in batch chunks.

    With a `memo`, activations already computed for equal tokens are reused.
    Raises InterpICLError naming any hook the model does not have.
    """
    names = list(dict.fromkeys(names))
    if memo is not None:
        known = memo.lookup(tokens)
        if known is not None and all(n in known for n in names):
            return {n: known[n] for n in names}
        wanted = names + [n for n in memo.extra if n in model.hook_dict and n not in names]
        acts = hook_cache(model, tokens, wanted, chunk_size)
        if known is not None:
            known.update(acts)
        else:
            memo.entries.append((tokens.clone(), acts))
        return {n: acts[n] for n in names}
    available = set(model.hook_dict)
    missing = [n for n in names if n not in available]
    require(
        not missing,
        f"model {type(model).__name__} has no hook(s) {', '.join(missing)}; analysis needs the "
        "TransformerLens hook layout described in DESIGN.md",
        InterpICLError,
    )
    wanted = set(names)
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    with torch.no_grad():
        for start in range(0, tokens.shape[0], chunk_size):
            _, cache = model.run_with_cache(
                tokens[start : start + chunk_size], names_filter=lambda n: n in wanted
            )
            for n in names:
                parts[n].append(cache[n].detach().float())
    return {n: torch.cat(v, dim=0) for n, v in parts.items()}


def resample_one_position(
    tokens: Tensor, d_vocab: int, low: int, high: int, repeats: int, generator: torch.Generator
) -> tuple[Tensor, Tensor, Tensor]:
    """Copies of `tokens` with exactly one token changed per copy.

    For each of `repeats` copies of the batch, one position j per sequence is drawn uniformly in
    [low, high] and its token is replaced by a uniformly drawn *different* token.
    Returns (corrupted ``[R*B, T]``, source row ``[R*B]`` into `tokens`, changed position j ``[R*B]``).
    """
    batch, seq = tokens.shape
    require(0 <= low <= high < seq, f"no position in [{low}, {high}] for sequences of length {seq}")
    source = torch.arange(batch).repeat(repeats)
    position = torch.randint(low, high + 1, (repeats * batch,), generator=generator)
    corrupted = tokens[source].clone()
    rows = torch.arange(repeats * batch)
    old = corrupted[rows, position]
    shift = torch.randint(1, d_vocab, (repeats * batch,), generator=generator)
    corrupted[rows, position] = (old + shift) % d_vocab
    return corrupted, source, position


def target_log_probs(model: nn.Module, tokens: Tensor, memo: ActivationMemo | None = None) -> Tensor:
    """Target-aligned log-probabilities ``[B, T, d]`` (row t: law of token t given tokens < t).

    Same numbers as `interp_icl.models.next_token_log_probs`; for a TransformerLens model with a
    memo the logits come from the memo's ``unembed.hook_out`` instead of another forward.
    """
    shape = layout(model)
    from_memo = shape.output == "logits" and shape.target_offset == 1
    if memo is None or not from_memo or "unembed.hook_out" not in model.hook_dict:
        return next_token_log_probs(model, tokens)
    return log_probs_from_logits(hook_cache(model, tokens, ["unembed.hook_out"], memo=memo)["unembed.hook_out"])


def attention_scores(
    model: nn.Module, tokens: Tensor, layer: int, memo: ActivationMemo | None = None
) -> tuple[Tensor, Tensor]:
    """(pre-softmax scores, pattern) of layer `layer`, both ``[B, H, T, T]``; -inf where masked.

    TransformerLens 4.3's TransformerBridge fires ``hook_attn_scores`` with the *post*-softmax
    pattern (see its attention bridge: "Most HF implementations return post-softmax weights"), so
    unless the layout says ``attn_scores = "hook"`` (the gih model) the scores are rebuilt as
    q·k / attn_scale from ``hook_q`` / ``hook_k`` with the causal mask. Either way the result is checked against ``hook_pattern`` (softmax must reproduce
    it to 1e-4); a model whose scores cannot be recovered raises InterpICLError.
    """
    base = f"blocks.{layer}.attn."
    if layout(model).attn_scores == "qk":
        cache = hook_cache(model, tokens, [base + "hook_q", base + "hook_k", base + "hook_pattern"], memo=memo)
        q, k, pattern = cache[base + "hook_q"], cache[base + "hook_k"], cache[base + "hook_pattern"]
        use_scale = getattr(model.cfg, "use_attn_scale", True)
        scale = float(getattr(model.cfg, "attn_scale", -1.0))
        scale = scale if use_scale and scale > 0 else q.shape[-1] ** 0.5
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) / scale
        seq = tokens.shape[1]
        future = torch.triu(torch.ones(seq, seq, dtype=torch.bool), diagonal=1)
        scores = scores.masked_fill(future, float("-inf"))
    else:
        cache = hook_cache(model, tokens, [base + "hook_attn_scores", base + "hook_pattern"], memo=memo)
        scores, pattern = cache[base + "hook_attn_scores"], cache[base + "hook_pattern"]
    rows_with_keys = torch.isfinite(scores).any(-1)  # [B, H, T]
    rebuilt = torch.softmax(scores, dim=-1)
    error = (rebuilt - pattern).abs().amax(-1)[rows_with_keys]
    require(
        error.numel() == 0 or float(error.max()) < 1e-4,
        f"cannot recover layer-{layer} pre-softmax attention scores of {type(model).__name__}: "
        f"softmax(scores) differs from hook_pattern by {float(error.max()) if error.numel() else 0:.2e}",
        InterpICLError,
    )
    return scores, pattern
