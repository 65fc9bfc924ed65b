"""Rich tables for the role experiments: what `interp-icl patch --roles` and `quickstart` print.

`report` is an `interp_icl.runs.RolesReport` (``.results``: {role: PassResult}, ``.n_sequences``).
"""

from __future__ import annotations

import math

from rich.table import Table

from interp_icl.analysis.result import set_label


def _num(value: float | None, digits: int = 3, sign: bool = False) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def verdict_table(report, title: str) -> Table:
    """One row per role: the verdict, and the checks that failed or the numbers behind a pass."""
    r = {role: result.summary for role, result in report.results.items()}
    table = Table(title=title)
    for column in ("role", "verdict", "evidence"):
        table.add_column(column)
    if any("not_applicable" in summary for summary in r.values()):  # a 1-layer model
        for role, summary in r.items():
            table.add_row(role, "[yellow]not applicable[/yellow]", summary.get("not_applicable", ""))
        return table
    c, s, k = r["copier"], r["selector"], r["classifier"]
    evidence = {
        "copier": "; ".join(
            f"{u} (r={v['attn_offset']}) {_num(v['effect'], sign=True)}"
            + (
                f" vs {_num(v['expected_effect'])} without parent {v['copies_parent']}"
                if v["copies_parent"]
                else ""
            )
            + (f", via {'+'.join(v['carried_by'])}" if v["carried_by"] else "")
            for u, v in c["heads"].items()
        ),
        "selector": f"interchange accuracy {_num(s['interchange_accuracy'])} (n = {s['interchange_pairs']}); "
        + ", ".join(
            f"non-parent δ={d}: query change {_num(o['query_change'], 2)}, KL {_num(o['prediction_kl'], 4)}"
            for d, o in s["offsets"].items()
            if o["kind"] == "non-parent"
        ),
        "classifier": f"fitted pattern recovers {_num(k['fitted_recovery'])} of the model's held-out "
        f"gain over uniform (held-out loss model {_num(k['held_out_loss']['model'])}, fitted "
        f"{_num(k['held_out_loss']['fitted pattern'])}, uniform {_num(k['held_out_loss']['uniform pattern'])}); "
        f"loss: model {_num(k['loss']['model'])}, ideal pattern {_num(k['loss']['ideal pattern'])}, "
        f"uniform {_num(k['loss']['uniform pattern'])}; {set_label(k['parents'])}-gram "
        f"{_num(k['loss']['pa-gram estimator'])}, unigram {_num(k['loss']['unigram estimator'])}",
    }
    labels = {
        "copier": "copier (layer 1)",
        "selector": "selector (layer-2 query)",
        "classifier": "classifier (layer 2)",
    }
    for role, summary in r.items():
        verdict = "[green]holds[/green]" if summary["holds"] else "[red]does not hold[/red]"
        text = evidence[role]
        if summary["failed_checks"]:
            text = "; ".join(summary["failed_checks"]) + f" [dim]({text})[/dim]"
        table.add_row(labels[role], verdict, text)
    return table


def role_tables(report) -> list[Table]:
    """Detailed tables: copier heads, their paths into layer 2, selector offsets, classifier losses."""
    r = {role: result.summary for role, result in report.results.items()}
    if any("not_applicable" in summary for summary in r.values()):
        return []  # no circuit to detail; `verdict_table` says why
    n = report.n_sequences
    c = r["copier"]
    copier = Table(title=f"copier: mean-ablate each layer-1 head (loss change in nats; n = {n})")
    for column in ("head", "attends", "parent", "effect", "expected", "verdict"):
        copier.add_column(column, justify="right" if column != "verdict" else "left")
    paths = Table(title="copier: path ablation into layer 2 (loss change in nats)")
    for column in ("head", "route", "q", "k", "v", "carried by"):
        paths.add_column(column, justify="right" if column != "carried by" else "left")
    for unit, v in c["heads"].items():
        if v["copies_parent"]:
            verdict = "necessary" if v["necessary"] else "NOT necessary"
        else:
            verdict = "no effect" if v["no_effect"] else "HAS an effect"
        copier.add_row(
            unit,
            f"r={v['attn_offset']} ({v['sharpness']:.2f})",
            str(v["copies_parent"] or "-"),
            f"{_num(v['effect'], sign=True)} ± {_num(v['effect_stderr'])}",
            _num(v.get("expected_effect")),
            verdict,
        )
        for route, effects in v["path_effects"].items():
            carried = ", ".join(v["carried_by"]) if route == "all" else ""
            paths.add_row(
                unit, route, *[_num(effects[x], sign=True) for x in ("q", "k", "v")], carried
            )
    s = r["selector"]
    selector = Table(
        title=f"selector: token at t-δ changed, layer-2 query patched at the last row (n = {n})"
    )
    for column in ("δ", "kind", "query change", "prediction KL", "verdict"):
        selector.add_column(column, justify="right" if column != "verdict" else "left")
    for d, o in s["offsets"].items():
        if o["kind"] == "parent":
            verdict = "carried" if o["carried"] else "NOT carried"
        else:
            verdict = (
                ("query invariant" if o["feature_invariant"] else "query MOVES")
                + ", "
                + ("prediction invariant" if o["prediction_invariant"] else "prediction MOVES")
            )
        selector.add_row(
            str(d), o["kind"], _num(o["query_change"]), _num(o["prediction_kl"], 4), verdict
        )
    k = r["classifier"]
    classifier = Table(
        title=f"classifier: layer-2 pattern replaced (loss on targets t >= {k['first_target']}; n = {n})"
    )
    classifier.add_column("run")
    classifier.add_column("loss", justify="right")
    for unit, value in k["loss"].items():
        classifier.add_row(unit, _num(value, 4))
    for unit, value in k["held_out_loss"].items():
        classifier.add_row(f"{unit} (held-out half)", _num(value, 4))
    for unit in k["fitted_a"]:
        classifier.add_row(
            f"{unit} fitted a, b", f"{_num(k['fitted_a'][unit], 2)}, {_num(k['fitted_b'][unit], 2)}"
        )
    classifier.add_row(
        f"fitted recovery (needs {k['thresholds']['fitted_recovery']})", _num(k["fitted_recovery"])
    )
    return [copier, paths, selector, classifier]
