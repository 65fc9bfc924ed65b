"""When a curve over training steps rises: small helpers shared by the dynamics analysis and the
theory modules (no heavy imports)."""

from __future__ import annotations

import math

import pandas as pd


def half_rise_step(curve: pd.Series) -> int | None:
    """First step (index of `curve`) where the curve has covered half its change from the first to
    the last value; None when it has fewer than two values or does not change."""
    curve = curve.dropna()
    if len(curve) < 2:
        return None
    start, end = float(curve.iloc[0]), float(curve.iloc[-1])
    if math.isclose(start, end, abs_tol=1e-12):
        return None
    halfway = start + 0.5 * (end - start)
    reached = curve[(curve - halfway) * math.copysign(1.0, end - start) >= 0]
    return int(reached.index[0])
