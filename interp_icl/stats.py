"""Interval statistics shared by every layer: the normal 95% quantile and the Wilson interval."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from interp_icl.seeding import seeded

Z95 = 1.959963984540054  # the 97.5% quantile of the standard normal
BOOTSTRAP_SAMPLES = 400


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (successes of n); (nan, nan) for n = 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def ratio_interval(
    statistic: Callable[[Tensor], float], n: int, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of ``statistic(index [n])`` over sequences resampled with
    replacement (seeded; non-finite draws dropped; None when fewer than half are finite)."""
    generator = seeded(seed)
    draws = []
    for _ in range(samples):
        index = torch.randint(0, n, (n,), generator=generator)
        value = statistic(index)
        if math.isfinite(value):
            draws.append(value)
    if len(draws) < samples // 2:
        return None
    values = torch.tensor(draws, dtype=torch.float64)
    low, high = torch.quantile(values, torch.tensor([0.025, 0.975], dtype=torch.float64))
    return float(low), float(high)
