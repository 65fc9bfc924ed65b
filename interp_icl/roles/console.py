"""Rich tables of role results, rendered generically from their checks: what
`interp-icl patch --roles` and `quickstart` print.

`results` is {role: RoleResult}.
"""

from __future__ import annotations

import math

from rich.table import Table

from interp_icl.roles.check import Check, HeadEffect, RoleResult


def _num(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1e-3 and value != 0 else f"{value:.{digits}f}"


def _verdict(holds: bool | None) -> str:
    return {True: "[green]holds[/green]", False: "[red]does not hold[/red]", None: "[yellow]–[/yellow]"}[holds]


def interval_text(check: Check) -> str:
    if check.interval is None:
        return ""
    low, high = check.interval
    return f"[{_num(low)}, {_num(high)}]"


def check_line(check: Check) -> str:
    """One check in one line: 'classifier.fitted_recovery 0.887 [0.865, 0.905] (needs >= 0.9)'."""
    measured = "not measured" if check.measured is None else " ".join(filter(None, (_num(check.measured), interval_text(check))))
    return f"{check.role}.{check.name} {measured} (needs {check.sense} {_num(check.needed)})"


def verdict_table(results: dict[str, RoleResult], title: str) -> Table:
    """One row per role: its verdict and, per check, what failed (or that all hold)."""
    table = Table(title=title)
    for column in ("role", "verdict", "evidence"):
        table.add_column(column)
    for role, result in results.items():
        if result.not_applicable is not None:
            table.add_row(role, "[yellow]not applicable[/yellow]", result.not_applicable)
            continue
        failed = result.failed
        text = "; ".join(f"{c.name}: {c.evidence}" for c in failed) if failed else "every check holds"
        if result.other_heads:
            text += "; other heads that matter: " + ", ".join(
                f"{h.unit} {h.effect:+.3f}" for h in result.other_heads
            )
        table.add_row(role, _verdict(result.holds), text)
    return table


def check_table(results: dict[str, RoleResult], title: str) -> Table:
    """Every check: measured [95% interval], needed, verdict, evidence (the nulls are in the JSON
    summary and the report)."""
    table = Table(title=title)
    for column in ("check", "measured [95% interval]", "needed", "verdict", "evidence"):
        table.add_column(column, justify="right" if column in ("measured [95% interval]", "needed") else "left")
    for result in results.values():
        for c in result.checks:
            table.add_row(
                f"{c.role}.{c.name}", f"{_num(c.measured)} {interval_text(c)}", f"{c.sense} {_num(c.needed)}",
                _verdict(c.holds), c.evidence,
            )
    return table


FEATURE_NAMES = {"position": "pos", "token_frequencies": "freq"}


def feature_name(name: str) -> str:
    """Short probe-feature names: token_at_offset_2 -> x@-2, position -> pos, token_frequencies -> freq."""
    if name.startswith("token_at_offset_"):
        return f"x@-{name.rsplit('_', 1)[1]}"
    return FEATURE_NAMES.get(name, name)


def hypothesis_line(hypothesis) -> str:
    """The GIH hypothesis test in one line (`interp_icl.roles.HypothesisResult`)."""
    if hypothesis is None:
        return "GIH hypothesis test: not applicable (no two-layer circuit)"
    if not math.isfinite(hypothesis.recovered):
        return f"GIH hypothesis test (causal scrubbing): {hypothesis.note}"
    interval = "" if hypothesis.interval is None else f" [{_num(hypothesis.interval[0])}, {_num(hypothesis.interval[1])}]"
    return (
        f"GIH hypothesis test (causal scrubbing of {', '.join(hypothesis.explained_heads)}): recovers "
        f"{_num(hypothesis.recovered)}{interval} of the loss reduction (model {_num(hypothesis.loss_model, 4)}, "
        f"scrubbed {_num(hypothesis.loss_scrubbed, 4)}, everything resampled {_num(hypothesis.loss_baseline, 4)} nats)"
    )


def head_parts(h: HeadEffect) -> dict[str, str]:
    """One head's account as short texts: {"effects": mean / resample ablation (nats), "paths":
    the effect through each path, "attention", "encodes": the three best-probed features}."""
    effects = f"{h.paths.get('mean ablation', math.nan):+.3f} / {h.paths.get('resample ablation', math.nan):+.3f}"
    paths = ", ".join(f"{k} {v:+.3f}" for k, v in h.paths.items() if not k.endswith("ablation"))
    offsets = sorted(h.attention.get("offset_mass", {}).items(), key=lambda kv: -kv[1])[:2]
    attention = f"entropy {h.attention['entropy']:.2f}; " + ", ".join(f"r={r} {m:.2f}" for r, m in offsets)
    ranked = sorted(h.encodes.items(), key=lambda kv: -(kv[1] if math.isfinite(kv[1]) else -1))[:3]
    encodes = ", ".join(f"{feature_name(k)} {v:.2f}" for k, v in ranked)
    return {"effects": effects, "paths": paths, "attention": attention, "encodes": encodes}


def head_line(h: HeadEffect) -> str:
    """One head's account in one line: 'L0H2: +0.390 / +0.720 nats (mean / resample); q +0.01,
    k +0.02, v +0.33, other +0.01; encodes pos 0.95, freq 0.80, x@-0 0.40'."""
    parts = head_parts(h)
    return f"{h.unit}: {parts['effects']} nats (mean / resample); {parts['paths']}; encodes {parts['encodes']}"


def heads_table(results: dict[str, RoleResult]) -> Table | None:
    """Heads outside the role sets whose ablation matters: effect, paths, attention, probes."""
    heads = [(role, h) for role, r in results.items() for h in r.other_heads]
    if not heads:
        return None
    table = Table(title="other heads that matter (outside the role sets; loss changes in nats)")
    for column in ("head", "effect (mean / resample)", "by path", "attention", "encodes (held-out R²)"):
        table.add_column(column)
    for role, h in heads:
        parts = head_parts(h)
        table.add_row(f"{h.unit} ({role})", parts["effects"], parts["paths"], parts["attention"], parts["encodes"])
    return table
