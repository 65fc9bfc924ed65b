"""When a curve over training steps rises: small helpers shared by the dynamics analysis and the
theory modules (no heavy imports)."""

from __future__ import annotations

import math

import pandas as pd


def smoothed(curve: pd.Series) -> pd.Series:
    """Median of each value and its two neighbours (the ends: of the two they have, i.e. their
    mean); damps one-evaluation spikes before a threshold is looked for."""
    return curve.rolling(3, center=True, min_periods=1).median()


def half_rise_step(curve: pd.Series) -> int | None:
    """First step (index of `curve`) where the curve has covered half its change from the first to
    the last value; None when it has fewer than two values or does not change."""
    curve = curve.dropna()
    if len(curve) < 2:
        return None
    return crossing_steps(curve, float(curve.iloc[0]), float(curve.iloc[-1]), (0.5,))[0.5]


def crossing_steps(
    curve: pd.Series, start: float, end: float, fractions: tuple[float, ...] = (0.1, 0.5, 0.9)
) -> dict[float, int | None]:
    """For each fraction f, the first step (index of `curve`, in its order: steps ascending) at
    which the curve has covered at least f of the way from the level `start` to the level `end`
    (rising or falling, by the sign of end - start); None where it never does, or for every f
    when start == end."""
    curve = curve.dropna()
    if math.isclose(start, end, abs_tol=1e-12):
        return {f: None for f in fractions}
    sign = math.copysign(1.0, end - start)
    steps = {}
    for f in fractions:
        reached = curve[(curve - (start + f * (end - start))) * sign >= 0]
        steps[f] = int(reached.index[0]) if len(reached) else None
    return steps
