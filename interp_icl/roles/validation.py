"""The role checks on the known-answer zoo (`interp_icl.models.zoo`): the confusion table.

`zoo_verdicts(models, n_sequences, seed)` runs every role experiment on every zoo model, on
sequences of the in-context Markov task with the model's parents (Dirichlet α = ZOO_ALPHA, the
model's vocabulary and n_ctx), and returns one row per (model, check): the check's measured value,
interval and verdict beside the verdict the model states for the check's role (True = must hold,
False = must fail, None = no statement). ``agrees`` is True / False where the model states a
verdict; a role result's own row (check ``"(role)"``) carries the role's verdict.

`zoo_hypotheses(models, n_sequences, seed)` runs the GIH hypothesis test (causal scrubbing) on the
same sequences: one row per model with the recovered fraction and its interval.

`confusion_markdown(table)` words it as the table of docs/patching.md: models × roles, each cell
the role's verdict (✓ holds, ✗ fails, – not applicable) and whether the zoo expected it.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from interp_icl.config import TaskConfig
from interp_icl.roles import ROLES, role_experiments
from interp_icl.roles.context import RoleContext
from interp_icl.roles.hypothesis import hypothesis_test
from interp_icl.seeding import generator
from interp_icl.tasks import make_task

ZOO_ALPHA = 0.1
ZOO_SEQUENCES = 48
ZOO_REFERENCE = 64


def zoo_sequences(zm, n_sequences: int, seed: int):
    """(clean ``[n, T]``, reference ``[ZOO_REFERENCE, T]``) tokens of the zoo model's Markov task."""
    task = make_task(TaskConfig(name="markov", vocab_size=zm.vocab_size, parents=zm.parents,
                                alpha=ZOO_ALPHA, seq_len=zm.n_ctx))
    tokens = task.sample(n_sequences, generator(seed, "zoo", zm.name, "clean")).tokens
    return tokens, task.sample(ZOO_REFERENCE, generator(seed, "zoo", zm.name, "reference")).tokens


def zoo_hypotheses(models: Sequence, n_sequences: int = ZOO_SEQUENCES, seed: int = 0) -> pd.DataFrame:
    """One row per zoo model: the GIH hypothesis test on the sequences `zoo_verdicts` uses."""
    rows = []
    for zm in models:
        tokens, _ = zoo_sequences(zm, n_sequences, seed)
        result = hypothesis_test(RoleContext.make(zm.build(), tokens, zm.parents, ZOO_ALPHA), seed)
        low, high = result.interval if result.interval is not None else (None, None)
        rows.append({"model": zm.name, "breaks": zm.breaks, "recovered": result.recovered, "low": low,
                     "high": high, "loss_model": result.loss_model, "loss_scrubbed": result.loss_scrubbed,
                     "loss_baseline": result.loss_baseline})
    return pd.DataFrame(rows)


def hypotheses_markdown(table: pd.DataFrame) -> str:
    """The hypothesis test on zoo models: recovered fraction [interval] and the three losses."""
    lines = ["| zoo model | breaks | recovered [95% interval] | loss: model / scrubbed / all resampled (nats) |",
             "| --- | --- | --- | --- |"]
    for r in table.itertuples():
        breaks = r.breaks if isinstance(r.breaks, str) else "– (positive)"
        lines.append(f"| {r.model} | {breaks} | {r.recovered:.3f} [{r.low:.3f}, {r.high:.3f}] | "
                     f"{r.loss_model:.4f} / {r.loss_scrubbed:.4f} / {r.loss_baseline:.4f} |")
    return "\n".join(lines) + "\n"


def zoo_verdicts(models: Sequence, n_sequences: int = ZOO_SEQUENCES, seed: int = 0) -> pd.DataFrame:
    """One row per (zoo model, check) and per (zoo model, role); see the module docstring."""
    rows = []
    for zm in models:
        tokens, reference = zoo_sequences(zm, n_sequences, seed)
        results = role_experiments(zm.build(), tokens, zm.parents, ZOO_ALPHA, reference, seed)
        for role in ROLES:
            result, expected = results[role], zm.expected.get(role)
            base = {"model": zm.name, "family": zm.family, "breaks": zm.breaks, "role": role, "expected": expected}
            rows.append({**base, "check": "(role)", "holds": result.holds,
                         "agrees": None if expected is None else result.holds == expected,
                         "other_heads": ",".join(h.unit for h in result.other_heads)})
            for c in result.checks:
                rows.append({**base, "check": c.name, "measured": c.measured, "needed": c.needed, "sense": c.sense,
                             "low": None if c.interval is None else c.interval[0],
                             "high": None if c.interval is None else c.interval[1], "holds": c.holds,
                             "agrees": None if expected is None or expected is False else c.holds == expected})
    return pd.DataFrame(rows)


def confusion_markdown(table: pd.DataFrame) -> str:
    """Models × roles (see the module docstring)."""
    roles = table[table["check"] == "(role)"]
    mark = {True: "✓ holds", False: "✗ fails", None: "– n/a"}
    lines = ["| zoo model | breaks | " + " | ".join(ROLES) + " | other heads that matter |",
             "| --- | --- | " + " | ".join("---" for _ in ROLES) + " | --- |"]
    for name, group in roles.groupby("model", sort=False):
        cells = []
        others = []
        for role in ROLES:
            r = group[group["role"] == role].iloc[0]
            holds = None if pd.isna(r["holds"]) else bool(r["holds"])
            expected = None if pd.isna(r["expected"]) else bool(r["expected"])
            verdict = mark[holds]
            if expected is not None:
                verdict += " (expected ✓)" if expected else " (expected ✗)"
                if holds != expected:
                    verdict = f"**{verdict} — WRONG**"
            cells.append(verdict)
            if r["other_heads"]:
                others.append(f"{role}: {r['other_heads']}")
        breaks = group["breaks"].iloc[0]
        lines.append(f"| {name} | {breaks if isinstance(breaks, str) else '– (positive)'} | "
                     + " | ".join(cells) + f" | {'; '.join(others) or '–'} |")
    return "\n".join(lines) + "\n"


def checks_markdown(table: pd.DataFrame) -> str:
    """Every check on every zoo model: measured [interval] against needed, and the verdict."""
    checks = table[table["check"] != "(role)"]

    def num(v) -> str:
        return "–" if v is None or pd.isna(v) else f"{v:.3g}"

    lines = ["| zoo model | check | measured | 95% interval | needed | verdict |", "| --- | --- | --- | --- | --- | --- |"]
    for r in checks.itertuples():
        interval = "–" if pd.isna(r.low) else f"[{num(r.low)}, {num(r.high)}]"
        verdict = "holds" if r.holds is True else "fails" if r.holds is False else "–"
        lines.append(f"| {r.model} | {r.role}.{r.check} | {num(r.measured)} | {interval} | {r.sense} {num(r.needed)} | {verdict} |")
    return "\n".join(lines) + "\n"
