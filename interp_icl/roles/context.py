"""What every role experiment starts from: checked inputs, the losses it compares with, statistics.

`RoleContext.make(model, tokens, parents, beta)` validates clean sequences ``[B, T]`` of an
in-context Markov task with parent offsets pa, and holds
  * ``t0``: the first target the losses count (`first_target`: the copier pass's
    `default_max_offset`, gih M + 1, standard max(pa) + 2), so every tested offset has a token;
  * ``clean``: the model's loss ``[B]`` (mean NLL of targets t0..T-1, nats);
  * ``estimator(offsets)``: the in-context S-gram estimator's loss ``[B]`` on the same targets
    (`sgram_probs`, add-β smoothing, the unigram for contexts not seen yet).
Estimator gaps set the scale of the thresholds: the cost of removing parent p is
``estimator(pa - {p}) - estimator(pa)`` on the same sequences; the classifier's gain is
``estimator(()) - estimator(pa)``.

Intervals: `interp_icl.stats.ratio_interval` is a seeded percentile bootstrap over sequences for ratios of means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from interp_icl.analysis.classifier import match_counts
from interp_icl.analysis.common import check_tokens_for
from interp_icl.analysis.copier import default_max_offset
from interp_icl.analysis.result import mean_stderr
from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.models.layout import ModelLayout
from interp_icl.patching.interventions import run_patched, sequence_nll
from interp_icl.patching.sources import cached_activations
from interp_icl.roles.check import normal_interval
from interp_icl.theory.estimators import sgram_probs


def first_target(model: nn.Module, parents: Sequence[int]) -> int:
    """t0: the first target the role losses count."""
    return default_max_offset(model, tuple(parents))


def estimator_nll(tokens: Tensor, offsets: Sequence[int], vocab: int, beta: float, t0: int) -> Tensor:
    """``[B]`` mean NLL of targets t0..T-1 under the in-context S-gram estimator (add-β)."""
    probs = sgram_probs(tokens, tuple(offsets), vocab, beta)[:, t0:].double()
    return -torch.log(probs.gather(-1, tokens[:, t0:, None])[..., 0].clamp_min(1e-300)).mean(-1)


@dataclass
class RoleContext:
    model: nn.Module
    tokens: Tensor  # [B, T]
    parents: tuple[int, ...]
    beta: float
    shape: ModelLayout
    t0: int
    _estimators: dict[tuple[int, ...], Tensor] = field(default_factory=dict)
    _clean: Tensor | None = None
    _cache: dict[str, Tensor] = field(default_factory=dict)
    memo: dict[str, object] = field(default_factory=dict)  # detectors' results, computed once

    @classmethod
    def make(cls, model: nn.Module, tokens: Tensor, parents: Sequence[int], beta: float) -> RoleContext:
        tokens = check_tokens_for(model, tokens)
        parents = tuple(sorted({int(p) for p in parents}))
        require(len(parents) > 0 and parents[0] >= 1, f"parents must be offsets >= 1, got {list(parents)}")
        require(tokens.shape[0] >= 4, f"role experiments need at least 4 sequences, got {tokens.shape[0]}")
        require(beta >= 0 and math.isfinite(beta), f"beta must be a finite number >= 0, got {beta}")
        t0 = first_target(model, parents)
        require(
            tokens.shape[1] >= 2 * t0 + 2,
            f"role experiments need sequences of at least {2 * t0 + 2} tokens, got {tokens.shape[1]}",
        )
        model.eval()
        return cls(model, tokens, parents, float(beta), layout(model), t0)

    @property
    def vocab(self) -> int:
        return int(self.model.cfg.d_vocab)

    @property
    def n(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def clean(self) -> Tensor:
        """``[B]`` the model's own loss."""
        if self._clean is None:
            self._clean = self.loss()
        return self._clean

    def cached(self, *names: str) -> Tensor | tuple[Tensor, ...]:
        """Clean activations at hook `names` (computed once per context; one tensor for one name)."""
        missing = [n for n in names if n not in self._cache]
        if missing:
            self._cache.update(cached_activations(self.model, self.tokens, missing))
        values = tuple(self._cache[n] for n in names)
        return values[0] if len(values) == 1 else values

    def loss(self, hooks=(), tokens: Tensor | None = None) -> Tensor:
        """``[B]`` the loss with forward `hooks` applied."""
        tokens = self.tokens if tokens is None else tokens
        return sequence_nll(self.model, run_patched(self.model, tokens, hooks), tokens, self.t0)

    def estimator(self, offsets: Sequence[int]) -> Tensor:
        key = tuple(sorted(offsets))
        if key not in self._estimators:
            self._estimators[key] = estimator_nll(self.tokens, key, self.vocab, self.beta, self.t0)
        return self._estimators[key]

    def parent_cost(self, parent: int) -> Tensor:
        """``[B]`` estimator loss without `parent` minus with the full parent set."""
        return self.estimator([p for p in self.parents if p != parent]) - self.estimator(self.parents)


def mean_interval(values: Tensor) -> tuple[float, float, tuple[float, float] | None]:
    """(mean, stderr, 95% normal interval) of per-sequence values (NaNs dropped)."""
    mean, stderr, _ = mean_stderr(values)
    return mean, stderr, normal_interval(mean, stderr)


def match_masks(tokens: Tensor, parents: tuple[int, ...], t0: int) -> tuple[Tensor, Tensor, Tensor]:
    """(full ``[B, Q, T]``, partial ``[B, Q, T]``, past ``[Q, T]``) for the rows that predict
    targets t0..T-1 from the match counts of `interp_icl.analysis.classifier.match_counts`: target
    t against key l < t, counted from l >= max(parents); full = every parent matches, partial =
    some but not all."""
    seq = tokens.shape[1]
    targets = torch.arange(t0, seq)
    keys = torch.arange(seq)
    past = keys[None, :] <= targets[:, None] - 1
    counted = past & (keys >= max(parents))
    counts = match_counts(tokens, parents)[:, targets]
    full = (counts == len(parents)) & counted
    partial = (counts >= 1) & (counts < len(parents)) & counted
    return full, partial, past
