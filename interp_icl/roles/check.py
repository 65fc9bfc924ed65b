"""The typed verdicts of the role experiments: `Check`, `HeadEffect` and `RoleResult`.

A `Check` is one measured number against one threshold:

    Check(role="copier", name="parent_2_key", measured=0.91, needed=0.5, sense=">=",
          interval=(0.84, 0.98), holds=True, null="...", evidence="...")

``measured`` is the effect size (its unit is in ``evidence``), ``interval`` its 95% interval over
sequences (normal approximation from the per-sequence stderr, or a seeded bootstrap where the
statistic is a ratio), ``needed`` the threshold the measured value must reach in the direction
``sense``, and ``null`` the value (in words) where a model *without* the property falls: every
threshold sits between that null and the property, and a check holds only when the measured value
passes the threshold *and* its interval excludes the null side stated by the check. ``holds`` is
None when the check cannot be decided (e.g. nothing to measure); the reason is then the evidence.

A `RoleResult` is one role's checks plus the heads outside the role's head set whose ablation
still matters (`HeadEffect`: reported, never failing the role), its long table and a JSON-able
``details`` dict that only the role's own module and its renderer in `interp_icl.roles` read.
Console, report, verdict rows and sweep cells render `Check` objects generically.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from interp_icl.stats import Z95


@dataclass(frozen=True)
class Check:
    role: str
    name: str
    measured: float | None
    needed: float | None
    sense: str  # ">=" or "<="
    interval: tuple[float, float] | None
    holds: bool | None
    null: str
    evidence: str

    @property
    def key(self) -> str:
        """``role.<role>.<name>``: the column of this check in sweep results."""
        return f"role.{self.role}.{self.name}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["interval"] = None if self.interval is None else list(self.interval)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Check:
        interval = data.get("interval")
        return cls(**{**data, "interval": None if interval is None else tuple(interval)})


@dataclass(frozen=True)
class HeadEffect:
    """A head outside the role's head set whose ablation changes the loss: what it does and
    through which path. Effects are loss changes in nats (mean over sequences, stderr)."""

    unit: str  # e.g. "L0H2"
    layer: int
    head: int
    ablation: str  # "mean" or "resample"
    effect: float
    stderr: float
    paths: dict[str, float]  # path name -> loss change when the head is ablated on that path only
    attention: dict[str, Any]  # entropy (nats), mass on offsets / matching keys
    encodes: dict[str, float] = field(default_factory=dict)  # feature -> held-out probe R²

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HeadEffect:
        return cls(**data)


@dataclass
class RoleResult:
    role: str
    checks: list[Check]
    table: pd.DataFrame
    details: dict[str, Any] = field(default_factory=dict)
    other_heads: list[HeadEffect] = field(default_factory=list)
    not_applicable: str | None = None

    @property
    def holds(self) -> bool | None:
        """True when every check holds, False when one fails, None when not applicable or a
        check is undecided and none failed."""
        if self.not_applicable is not None:
            return None
        values = [c.holds for c in self.checks]
        if any(v is False for v in values):
            return False
        return None if any(v is None for v in values) or not values else True

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.holds is False]

    def summary(self) -> dict[str, Any]:
        """JSON-able: everything but the table."""
        return {
            "role": self.role,
            "holds": self.holds,
            "not_applicable": self.not_applicable,
            "checks": [c.to_dict() for c in self.checks],
            "other_heads": [h.to_dict() for h in self.other_heads],
            "details": self.details,
        }

    @classmethod
    def from_summary(cls, summary: dict[str, Any], table: pd.DataFrame) -> RoleResult:
        return cls(
            role=summary["role"],
            checks=[Check.from_dict(c) for c in summary["checks"]],
            table=table,
            details=summary.get("details") or {},
            other_heads=[HeadEffect.from_dict(h) for h in summary.get("other_heads") or []],
            not_applicable=summary.get("not_applicable"),
        )


def normal_interval(mean: float, stderr: float) -> tuple[float, float] | None:
    """The 95% normal interval mean ± 1.96 stderr (None when either is not finite)."""
    if not (math.isfinite(mean) and math.isfinite(stderr)):
        return None
    return (mean - Z95 * stderr, mean + Z95 * stderr)


def passes(value: float | None, needed: float, sense: str) -> bool:
    """`value` on the right side of `needed` (False for None / NaN)."""
    if value is None or not math.isfinite(value):
        return False
    return value >= needed if sense == ">=" else value <= needed
