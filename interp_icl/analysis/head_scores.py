"""Induction-head scores (REFERENCE §2): previous-token, duplicate-token and induction scores of
every head at once, on repeated random tokens, in both TransformerLens `detect_head` conventions.

Detection patterns P ``[T, T]`` (query i, key j), as in `transformer_lens.head_detector` for a
TransformerLens model; c_i = x_{i + target_offset - 1} is the latest token visible at query i
(x_i in TransformerLens, x_{t-1} at a gih query slot t):
  * previous_token: P[i, i-1] = 1;
  * duplicate_token: P[i, j] = 1 for j < i + target_offset - 1 with x_j = c_i;
  * induction (prefix matching): P[i, j] = 1 for 1 <= j <= i + target_offset - 1 with x_{j-1} = c_i.
Scores per sequence, then mean ± stderr over sequences (TransformerLens averages a list of prompts):
  * "mul": sum(A ⊙ P) / sum(A);
  * "abs": 1 - sum|A - P| / T (TransformerLens additionally rounds this to 3 decimals; we do not).
On repeated random tokens [s, s, ...] (block length L) the pass also reports the classic
Olsson et al. numbers over queries in the second and later copies: ``repeat_induction`` (attention
to the key holding the token to predict, t - L with t = i + target_offset), ``repeat_duplicate``
(to i - L) and ``repeat_previous`` (to i - 1). These single-key scores only isolate induction when
the vocabulary is large next to the block: with d = 3 a token recurs every few positions and a
perfect bigram induction head splits its attention over all of them, so the summary names
induction heads by the "mul" induction score, which counts every matching key.

Standard (TransformerBridge) models also get weight-based scores from what the bridge provides:
``ov_copying`` = Σ Re λ / Σ |λ| over the eigenvalues λ of the full OV circuit W_E W_OV W_U of each
head (Elhage et al. 2021; +1 for a pure copier; positional embeddings and any layer norm are
ignored; NaN for a head whose OV circuit is zero), and ``k_composition`` of every head into every
head of each later layer (`all_composition_scores("K")`; NaN where a head's matrix is zero; the
source layer is in the unit name ``L{l0}H{h0}->L{l1}H{h1}``; none in a 1-layer model).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for, hook_cache, target_offset
from interp_icl.analysis.result import PassResult, make_table, row, scalar_row
from interp_icl.errors import require
from interp_icl.seeding import seeded

SCORE_NAMES = ("previous_token", "duplicate_token", "induction")
INDUCTION_THRESHOLD = 0.5


def repeated_random_tokens(
    n_sequences: int, block_len: int, n_repeats: int, vocab_size: int, generator: torch.Generator
) -> Tensor:
    """``[n, block_len * n_repeats]`` sequences: one uniform random block repeated."""
    block = torch.randint(0, vocab_size, (n_sequences, block_len), generator=generator)
    return block.repeat(1, n_repeats)


def detection_patterns(tokens: Tensor, target_offset: int = 1) -> dict[str, Tensor]:
    """The three detection patterns of every sequence, ``{name: [B, T, T]}`` float."""
    batch, seq = tokens.shape
    q = torch.arange(seq)[:, None]
    k = torch.arange(seq)[None, :]
    latest_pos = q + target_offset - 1  # position of c_i
    latest = tokens[:, latest_pos.clamp(0, seq - 1)[:, 0]]  # [B, T]: c_i
    has_latest = (latest_pos[:, 0] >= 0)[None, :, None]
    previous = (k == q - 1).expand(batch, seq, seq)
    duplicate = (tokens[:, None, :] == latest[:, :, None]) & (k < latest_pos) & has_latest
    shifted = torch.full_like(tokens, -1)
    shifted[:, 1:] = tokens[:, :-1]
    induction = (shifted[:, None, :] == latest[:, :, None]) & (k >= 1) & (k <= latest_pos) & has_latest
    return {
        "previous_token": previous.float(),
        "duplicate_token": duplicate.float(),
        "induction": induction.float(),
    }


def pattern_scores(attention: Tensor, pattern: Tensor) -> tuple[Tensor, Tensor]:
    """("mul", "abs") scores ``[B, H]`` of attention ``[B, H, T, T]`` against patterns ``[B, T, T]``."""
    a = attention.double()
    p = pattern.double()[:, None]
    mul = (a * p).sum((-2, -1)) / a.sum((-2, -1))
    absolute = 1.0 - (a - p).abs().sum((-2, -1)) / a.shape[-1]
    return mul, absolute


def head_scores(
    model: nn.Module,
    tokens: Tensor | None = None,
    n_sequences: int = 64,
    block_len: int | None = None,
    n_repeats: int = 2,
    seed: int = 0,
    induction_threshold: float = INDUCTION_THRESHOLD,
) -> PassResult:
    """Scores of every head of every layer.

    tokens: sequences to score ``[B, T]``; default `n_sequences` repeated random token blocks of
    length `block_len` (default min(50, n_ctx // n_repeats)) drawn with `seed`.
    """
    d, n_ctx = int(model.cfg.d_vocab), int(model.cfg.n_ctx)
    if tokens is None:
        block_len = min(50, n_ctx // n_repeats) if block_len is None else block_len
        require(block_len >= 2 and block_len * n_repeats <= n_ctx, f"{n_repeats} blocks of {block_len} tokens do not fit n_ctx={n_ctx}")
        tokens = repeated_random_tokens(n_sequences, block_len, n_repeats, d, seeded(seed))
    tokens = check_tokens_for(model, tokens)
    require(tokens.shape[1] >= 2, "head scores need sequences of at least 2 tokens")
    off = target_offset(model)
    n_layers = int(model.cfg.n_layers)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(n_layers)]
    cache = hook_cache(model, tokens, names)
    patterns = detection_patterns(tokens, off)
    repeat_rows = _repeat_masks(tokens.shape[1], block_len, off) if block_len else None

    rows: list[dict] = []
    heads: dict[str, dict] = {}
    for layer, name in enumerate(names):
        attention = cache[name]  # [B, H, T, T]
        scores = {score: pattern_scores(attention, pat) for score, pat in patterns.items()}
        repeat = _repeat_scores(attention, repeat_rows) if repeat_rows else {}
        for h in range(attention.shape[1]):
            unit = f"L{layer}H{h}"
            labels = dict(layer=layer, head=h)
            entry = {}
            for score, (mul, absolute) in scores.items():
                rows.append(row(unit, f"{score}_mul", mul[:, h], **labels))
                rows.append(row(unit, f"{score}_abs", absolute[:, h], **labels))
                entry[f"{score}_mul"] = rows[-2]["mean"]
            for score, values in repeat.items():
                rows.append(row(unit, score, values[:, h], **labels))
                entry[score] = rows[-1]["mean"]
            heads[unit] = entry

    if hasattr(model, "OV") and hasattr(model, "W_E"):
        rows += _weight_scores(model, heads)

    best = {score: max(heads, key=lambda u: heads[u][f"{score}_mul"]) for score in SCORE_NAMES}
    summary = {
        "target_offset": off,
        "block_len": block_len,
        "n_repeats": n_repeats if block_len else None,
        "heads": heads,
        "top_previous_token_head": best["previous_token"],
        "top_duplicate_token_head": best["duplicate_token"],
        "top_induction_head": best["induction"],
        "induction_heads": sorted(u for u, e in heads.items() if e["induction_mul"] >= induction_threshold),
        "previous_token_heads": sorted(u for u, e in heads.items() if e["previous_token_mul"] >= induction_threshold),
        "threshold": induction_threshold,
        "n_sequences": int(tokens.shape[0]),
    }
    return PassResult("head_scores", make_table(rows), summary)


def _repeat_masks(seq: int, block_len: int, off: int) -> dict[str, Tensor]:
    """Boolean ``[T, T]`` masks of the single key each Olsson score looks at, for queries whose
    target t = i + off lies in the second or later copy (t >= block_len); a query without that key
    (i - block_len < 0 for the duplicate score) is left out."""
    q = torch.arange(seq)[:, None]
    k = torch.arange(seq)[None, :]
    in_repeat = q + off >= block_len
    return {
        "repeat_induction": (k == q + off - block_len) & in_repeat,
        "repeat_duplicate": (k == q - block_len) & in_repeat,
        "repeat_previous": (k == q - 1) & in_repeat,
    }


def _repeat_scores(attention: Tensor, masks: dict[str, Tensor]) -> dict[str, Tensor]:
    """Mean attention on the masked key over the masked queries, per sequence and head ``[B, H]``."""
    out = {}
    for name, mask in masks.items():
        queries = mask.any(-1)
        out[name] = (attention.double() * mask).sum(-1)[:, :, queries].mean(-1)
    return out


def _weight_scores(model: nn.Module, heads: dict[str, dict]) -> list[dict]:
    rows = []
    with torch.no_grad():
        full_ov = model.W_E @ model.OV @ model.W_U  # FactoredMatrix [L, H, d, d]
        eig = full_ov.eigenvalues  # [L, H, k] complex
        copying = eig.real.sum(-1) / eig.abs().sum(-1)
        composition = model.all_composition_scores("K")  # [L, H, L, H]
    n_layers, n_heads = copying.shape
    for layer in range(n_layers):
        for h in range(n_heads):
            value = float(copying[layer, h])
            unit = f"L{layer}H{h}"
            rows.append(scalar_row(unit, "ov_copying", value, 1, layer=layer, head=h))
            heads[unit]["ov_copying"] = value
    pairs = [(l0, l1) for l1 in range(n_layers) for l0 in range(l1)]  # every earlier layer
    for l0, l1 in pairs:
        for h0 in range(n_heads):
            for h1 in range(n_heads):
                value = float(composition[l0, h0, l1, h1])
                unit = f"L{l0}H{h0}->L{l1}H{h1}"
                rows.append(scalar_row(unit, "k_composition", value, 1, layer=l1, head=h1, source_head=h0))
                heads[f"L{l1}H{h1}"][f"k_composition_from_L{l0}H{h0}"] = None if math.isnan(value) else value
    return rows
