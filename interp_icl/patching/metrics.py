"""Patching metrics: one number per sequence from a model's output.

A `Metric` wraps ``fn(output [B, T, V]) -> [B]`` and declares the output rows it reads
(``reads``; None = every row). The patching engine recomputes only those rows; every other row of
the output it hands to ``fn`` is NaN, so a metric that reads a row it did not declare returns NaN
instead of a silently stale number.

"Output" is what the model returns, as its layout declares (`interp_icl.models.layout`):
TransformerLens logits for the standard family (row i predicts token i+1), probabilities for the
gih family (row t predicts token t). The builders below take the model and handle both; `Metric` itself accepts any callable, e.g. one written for
`transformer_lens.patching`, once it returns per-sequence values.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp_icl.errors import require
from interp_icl.models import output_log_probs, target_offset


@dataclass(frozen=True)
class Metric:
    """``fn(output [B, T, V]) -> [B]`` reading output rows `reads` (None: all rows)."""

    fn: Callable[[Tensor], Tensor]
    reads: tuple[int, ...] | None = None
    name: str = "metric"

    def rows(self, seq_len: int) -> Tensor:
        """The rows read, as sorted non-negative indices ``[R]``."""
        if self.reads is None:
            return torch.arange(seq_len)
        rows = sorted({r % seq_len for r in self.reads})
        for r in self.reads:
            require(
                -seq_len <= r < seq_len,
                f"metric {self.name!r} reads row {r}, outside a {seq_len}-token output",
            )
        return torch.tensor(rows, dtype=torch.long)

    def __call__(self, output: Tensor) -> Tensor:
        return self.fn(output)


def unread_to_nan(output: Tensor, rows: Tensor) -> Tensor:
    """`output` ``[..., T, V]`` with every row not in `rows` set to NaN."""
    keep = torch.zeros(output.shape[-2], dtype=torch.bool, device=output.device)
    keep[rows] = True
    return output.masked_fill(~keep[:, None], math.nan)


def per_sequence(metric: Metric, outputs: Tensor) -> Tensor:
    """``[C, B]`` metric of each of C outputs ``[C, B, T, V]``."""
    values = []
    for output in outputs:
        value = torch.as_tensor(metric(output)).detach()
        if value.shape != (outputs.shape[1],):
            raise ValueError(
                f"metric {metric.name!r} must return one value per sequence, shape ({outputs.shape[1]},); "
                f"got {tuple(value.shape)}"
            )
        values.append(value)
    return torch.stack(values)


def metric_on_output(metric: Metric, output: Tensor) -> Tensor:
    """``[B]`` the metric on one model output ``[B, T, V]``, rows it does not declare set to NaN."""
    return per_sequence(metric, unread_to_nan(output, metric.rows(output.shape[1]))[None])[0]


def prediction_rows(model: nn.Module, seq_len: int) -> tuple[int, ...]:
    """Output rows that predict a token of the sequence (TL: 0..T-2, gih: 1..T-1)."""
    offset = target_offset(model)
    return tuple(range(1 - offset, seq_len - offset))


def target_loss(model: nn.Module, tokens: Tensor, rows: Sequence[int] | None = None) -> Metric:
    """Mean negative log-likelihood of the true next tokens over `rows` (default: every row that
    predicts a token of `tokens`), per sequence. Units: nats."""
    seq_len = tokens.shape[1]
    offset = target_offset(model)
    rows = prediction_rows(model, seq_len) if rows is None else tuple(r % seq_len for r in rows)
    for r in rows:
        require(0 <= r + offset < seq_len, f"output row {r} predicts no token of the sequence")
    index = torch.tensor(rows, dtype=torch.long)
    targets = tokens[:, index + offset]  # [B, R]

    def fn(output: Tensor) -> Tensor:
        logp = output_log_probs(model, output[:, index])
        return -logp.gather(-1, targets[..., None].to(logp.device))[..., 0].mean(-1)

    return Metric(fn, rows, "loss")


def logit_diff(model: nn.Module, row: int, token_a: Tensor, token_b: Tensor) -> Metric:
    """log p(a) - log p(b) at output `row`, per sequence (`token_a`, `token_b`: ``[B]``). For a
    softmax model this is the logit difference."""

    def fn(output: Tensor) -> Tensor:
        logp = output_log_probs(model, output[:, row])
        return logp.gather(-1, token_a[:, None])[:, 0] - logp.gather(-1, token_b[:, None])[:, 0]

    return Metric(fn, (row,), "logit_diff")


def prob_diff(model: nn.Module, row: int, token_a: Tensor, token_b: Tensor) -> Metric:
    """p(a) - p(b) at output `row`, per sequence."""

    def fn(output: Tensor) -> Tensor:
        p = output_log_probs(model, output[:, row]).exp()
        return p.gather(-1, token_a[:, None])[:, 0] - p.gather(-1, token_b[:, None])[:, 0]

    return Metric(fn, (row,), "prob_diff")


def kl_to(model: nn.Module, reference_output: Tensor, rows: Sequence[int] | None = None) -> Metric:
    """KL(reference || patched) in nats, averaged over `rows` (default: every prediction row),
    per sequence. `reference_output` ``[B, T, V]`` is e.g. the clean run's output."""
    seq_len = reference_output.shape[1]
    rows = prediction_rows(model, seq_len) if rows is None else tuple(r % seq_len for r in rows)
    index = torch.tensor(rows, dtype=torch.long)
    ref = output_log_probs(model, reference_output[:, index]).detach()

    def fn(output: Tensor) -> Tensor:
        logp = output_log_probs(model, output[:, index])
        return (ref.exp() * (ref - logp)).sum(-1).mean(-1)

    return Metric(fn, rows, "kl_to_clean")
