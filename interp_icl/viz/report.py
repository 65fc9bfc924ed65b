"""`build_report`: one self-contained HTML report on a run, with the data behind every figure.

The report renders only: it obtains every result through `interp_icl.runs` (stored in the run's
result store, or computed and stored there now) and draws it:

* run summary (task, model, training, seed, package versions) and the headline verdicts — copied
  offsets, selected set, closest strategy, theory prediction and the role experiments, each
  against the task's truth;
* training dynamics: held-out loss against the oracles, and each role's progress curve with the
  step where it formed (`analysis.dynamics`, cached per checkpoint);
* the last checkpoint: copier heatmap, gih relative-position weights, selector sensitivities with
  the theory's S*, classifier attention by match count and KL to every strategy;
* circuitsvis attention patterns of every layer on the sample sequences that exercise the
  circuit most (`interp_icl.analysis.examples`);
* patching: every sweep stored for this checkpoint (`interp_icl.runs.patch_sweeps`: the default
  z-by-position sweep if none was stored) and the role-experiment table;
* circuit: every edge-level circuit stored for this checkpoint (`interp_icl.runs.circuits`: the
  default `interp-icl circuit` result if none was stored) drawn beside the GIH hypothesis, and
  the faithfulness curves.

Offline: plotly.js and the circuitsvis bundle are inlined once each. Data (CSV/JSON) goes to
``<report stem>_data/`` next to the report. Both are written atomically
(`interp_icl.runs.files`), so a failed build leaves an earlier report untouched.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import plotly.io as pio
import plotly.offline

from interp_icl.analysis.examples import POOL as N_VIEW_POOL  # examples are picked from this many
from interp_icl.config import CONTINUOUS_TASKS
from interp_icl.errors import require
from interp_icl.jsonable import dumps
from interp_icl.runs.files import atomic_dir, check_output_file, write_text
from interp_icl.viz import figures
from interp_icl.viz.attention import AttentionView, bundle_script
from interp_icl.viz.patching import table_heatmap

N_VIEW_SEQUENCES = 2  # sample sequences shown as attention patterns
CURVE_PASSES = ("copier", "selector", "classifier")  # what the dynamics curves read


@dataclass
class ReportPage:
    """The report being assembled: HTML sections and the data files written beside it."""

    sections: list[tuple[str, str, str]] = field(default_factory=list)  # (anchor, title, html)
    data: dict[str, pd.DataFrame | dict] = field(default_factory=dict)  # file name -> content
    n_figures: int = 0
    n_views: int = 0

    def figure(self, fig: go.Figure, name: str, data: pd.DataFrame | dict) -> str:
        """The figure's HTML (plotly.js not included) and its data registered as `name`."""
        self.n_figures += 1
        self.data[name] = data
        div = pio.to_html(
            fig, full_html=False, include_plotlyjs=False, config={"displaylogo": False}
        )
        return f'<div class="figure">{div}<p class="data">data: {name}</p></div>'

    def add(self, anchor: str, title: str, body: str) -> None:
        self.sections.append((anchor, title, body))

    def verdict_table(
        self, name: str, rows: list[tuple[str, str, str, bool | None]], header: list[str]
    ) -> str:
        """HTML of rows (quantity, measured, expected, holds?) — the last column drawn as a
        green yes / red no — and the same rows registered as the CSV `name`."""
        self.data[name] = pd.DataFrame(
            [(*row[:3], {True: "yes", False: "no", None: ""}[row[3]]) for row in rows],
            columns=header,
        )
        return _table(header, [(*row[:3], _yes(row[3])) for row in rows], raw_last=True)


def build_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    progress: Callable[[str], None] | None = None,
    n_sequences: int = 256,
    n_kernels: int = 1000,
    dynamics_sequences: int = 64,
) -> Path:
    """Write the report of run `run_dir` (last checkpoint) to `out` (default RUN/report.html).

    `n_sequences`: evaluation sequences of the analysis passes and of the role experiments at
    the last checkpoint; `n_kernels`: prior kernels of the theory pass (the defaults are those
    of ``interp-icl analyze`` and ``interp-icl patch --roles``, whose stored results are reused);
    `dynamics_sequences`: sequences per checkpoint for the training-dynamics curves (copier,
    selector and classifier passes; cached separately from ``interp-icl analyze``).
    `progress` is called with a short description of each step."""
    from interp_icl.analysis.dynamics import stage_order
    from interp_icl.analysis.pipeline import AnalysisSettings
    from interp_icl.runs import analyze_checkpoint, dynamics, load_run, rundir, run_roles

    run = Path(run_dir)
    steps = rundir.resolve_steps(run, "all")  # checks the run directory and its checkpoints
    out_path = Path(out) if out is not None else run / "report.html"
    require(out_path.suffix == ".html", f"--out must name an .html file, got {out_path}")
    check_output_file(out_path, "--out")
    settings = AnalysisSettings(n_sequences=n_sequences, n_kernels=n_kernels)
    curve_settings = AnalysisSettings(passes=CURVE_PASSES, n_sequences=dynamics_sequences)
    say = progress or (lambda _: None)
    start = time.perf_counter()
    config = rundir.read_config(run)
    require(
        config.task.name not in CONTINUOUS_TASKS,
        f"the report covers token tasks; {run} is a {config.task.name} run (its studies are "
        "in analyses/)",
    )
    page = ReportPage()

    say(f"analysing {len(steps)} checkpoints")
    dyn_table, analyses = dynamics(run, steps, curve_settings)
    dyn_final = analyses[steps[-1]]
    measured = {n for n, r in dyn_final.results.items() if "skipped" not in r.summary}
    order = stage_order(dyn_table, dyn_final) if {"copier", "classifier"} <= measured else None
    say("analysing the last checkpoint")
    final = analyze_checkpoint(run, steps[-1], settings)
    is_markov = config.task.name == "markov"
    roles = None
    if is_markov:
        say("role experiments")
        roles = run_roles(run, steps[-1], n_sequences=n_sequences, seed=0)
    say("drawing figures")
    page.add("summary", "Run", _summary_section(run, config, steps, rundir.recorded_versions(run)))
    page.add("verdicts", "Headline verdicts", _verdict_section(page, final, roles, order))
    page.add(
        "dynamics",
        "Training dynamics",
        _dynamics_section(page, rundir.read_metrics(run), dyn_table, dyn_final, order, dynamics_sequences),
    )
    loaded = load_run(run, steps[-1])
    page.add("layers", f"The circuit at step {steps[-1]}", _layers_section(page, loaded, final))
    say("attention patterns")
    page.add("attention", "Attention patterns", _attention_section(page, loaded))
    if is_markov:
        say("patching")
        page.add("patching", "Patching", _patching_section(page, loaded, roles))
        say("circuit")
        page.add("circuit", "Circuit", _circuit_section(page, loaded, n_sequences))
    page.data["report.json"] = {
        "run": str(run),
        "step": steps[-1],
        "checkpoints": steps,
        "seconds": round(time.perf_counter() - start, 2),
        "figures": page.n_figures,
        "attention_views": page.n_views,
        "versions": rundir.package_versions(),
    }
    write_page(page, out_path, f"{run.name}: interp_icl report")
    return out_path


# ----------------------------------------------------------------------------- sections


def _summary_section(run: Path, config, steps: list[int], trained_with: dict[str, str]) -> str:
    from interp_icl.runs.rundir import package_versions

    data = config.to_dict()
    rows = [
        ("run directory", str(run)),
        ("task", _kv(data["task"])),
        ("model", _kv(data["model"])),
        ("training", _kv({k: v for k, v in data["train"].items() if v not in (None, [], {})})),
        ("seed", str(data["seed"])),
        ("checkpoints", f"{len(steps)} ({', '.join(map(str, steps))})"),
        ("trained with", _kv(trained_with)),
        ("report made with", _kv(package_versions())),
    ]
    return _table(["", "value"], rows)


def _verdict_section(page: ReportPage, final, roles, order: dict | None) -> str:
    """Each headline number beside the truth it should match (`verdict_rows`)."""
    from interp_icl.analysis.verdicts import verdict_rows

    summaries = {name: result.summary for name, result in final.results.items()}
    verdicts = verdict_rows(summaries, roles.results if roles else None, order)
    rows = [(v.quantity, v.measured, v.expected, _verdict_html(v)) for v in verdicts]
    page.data["verdicts.csv"] = pd.DataFrame(
        [(v.quantity, v.measured, v.expected, v.verdict) for v in verdicts],
        columns=["quantity", "model", "truth", "agrees"],
    )
    note = (
        "<p>“truth” is the task's parent set (or what the theory or the paper predicts). "
        "Role experiments: causal checks of <code>interp-icl patch --roles</code> "
        f"({roles.n_sequences if roles else '–'} sequences, seed 0; thresholds in "
        "docs/patching.md). The modified "
        "χ²-mutual information is the criterion of the authors' reference code "
        "(<code>RPE/utils.py</code> <code>chi_square_mutual_info</code>, power 2; REFERENCE §1).</p>"
    )
    return _table(["quantity", "model", "truth", "agrees"], rows, raw_last=True) + note


def _dynamics_section(
    page: ReportPage, metric_rows: list[dict], table: pd.DataFrame, final, order, n_sequences: int
) -> str:
    from interp_icl.analysis.dynamics import role_curves

    parts = []
    metrics = pd.DataFrame(metric_rows)
    if len(metrics):
        fig, data = figures.loss_curves(metrics)
        parts.append(page.figure(fig, "loss_curves.csv", data))
    curves = role_curves(table, final)
    if curves:
        halves = order["half_rise_step"] if order else {}
        fig, data = figures.role_curves(curves, halves)
        parts.append(page.figure(fig, "role_curves.csv", data))
    page.data["dynamics.csv"] = table
    parts.append(
        "<p>Loss in nats per token over all targets of the run's held-out sequences. Role curves: "
        "copier = layer-1 attention mass of the parent-copying heads on their offsets; selector "
        "= gih p_S of the parent heads, else the best layer-2 head's attention mass on full "
        "parent matches; classifier = that head's logit gap between full matches and the rest "
        "(effective inverse temperature). Dashed: the first checkpoint that covers half of "
        f"the curve's change (half-rise step). Curves use {n_sequences} sequences per "
        "checkpoint; all their analysis rows: dynamics.csv.</p>"
    )
    return "".join(parts)


def _layers_section(page: ReportPage, loaded, final) -> str:
    parts = []
    table = final.table()
    r = {n: result for n, result in final.results.items() if "skipped" not in result.summary}
    if "copier" in r:
        fig, data = figures.copier_heatmap(table)
        parts.append(page.figure(fig, "copier.csv", data))
    model = loaded.model
    if hasattr(model, "w_rpe"):
        fig, data = figures.rpe_heatmap(model.w_rpe)
        parts.append(page.figure(fig, "rpe_weights.csv", data))
    if "selector" in r:
        predicted = r["theory"].summary["predicted"] if "theory" in r else None
        fig, data = figures.selector_bars(table, r["selector"].summary, predicted)
        parts.append(page.figure(fig, "selector.csv", data))
    if "classifier" in r:
        fig, data = figures.classifier_bars(table, r["classifier"].summary)
        parts.append(page.figure(fig, "classifier.csv", data))
    page.data["analysis_last_step.csv"] = table
    page.data["analysis_last_step.json"] = final.summary()
    parts.append(
        "<p>Copier: mean layer-1 attention from position i to i − r. Selector: normalised "
        "change of the best layer-2 unit's key and query features when only the token at that "
        "offset is resampled (gih: also p_S, the FFN's weight on each copied-offset subset). "
        "Classifier: layer-2 attention per earlier key by how many parent tokens it matches with "
        "the query, and KL(model ‖ strategy) in nats for every in-context S-gram, unigram, "
        "uniform and Bayes.</p>"
    )
    return "".join(parts)


def _attention_section(page: ReportPage, loaded) -> str:
    from interp_icl.runs.analysis import attention_examples

    examples = attention_examples(loaded.path, loaded.step, N_VIEW_SEQUENCES)
    picked = "; ".join(
        f"sequence {e.index}: {e.contexts} distinct parent contexts, "
        f"{e.pairs} distinct (context, next token) pairs"
        for e in examples
    )
    intro = (
        f"<p>The {len(examples)} of {N_VIEW_POOL} sample sequences of the run's task (seeded by "
        "the run's seed) that exercise the circuit most: the most distinct parent contexts, "
        f"then the most distinct (context, next token) pairs ({html.escape(picked)}). Hover a "
        "head to see its pattern; token labels are token ids. Layer 1 should attend at the "
        "copied offsets, layer 2 to earlier positions whose parents match the query's.</p>"
    )
    parts = [intro]
    for e in examples:
        labels = [str(int(t)) for t in e.tokens]
        for layer, pattern in enumerate(e.patterns):
            heads = [f"L{layer}H{h}" for h in range(pattern.shape[0])]
            view = AttentionView(pattern, labels, heads, f"sequence {e.index}, layer {layer + 1}")
            page.n_views += 1
            page.data[f"attention_seq{e.index}_layer{layer + 1}.json"] = view.props()
            parts.append(view.html())
    return "".join(parts)


def _patching_section(page: ReportPage, loaded, roles) -> str:
    from interp_icl.runs import patch_sweeps

    parts = []
    for sweep in patch_sweeps(loaded.path, loaded.step):
        stem, summary, table = sweep.stem, sweep.summary, sweep.table
        axes = tuple(summary["axes"])
        metric = summary.get("settings", {}).get("metric", summary.get("metric", ""))
        title = f"{stem}: {{value}} of {metric} (n = {summary.get('n_sequences')} sequences)"
        parts.append(page.figure(table_heatmap(table, axes, title), f"{stem}.csv", table))
    parts.append(
        "<p>Effect = metric with the patch − metric of the run patched into (denoising: "
        "clean activations into the corrupted run). Stored sweeps come from "
        "<code>interp-icl patch</code>.</p>"
    )
    if roles is not None:
        table = roles.table
        page.data["roles.csv"] = table
        page.data["roles.json"] = roles.summary()
        parts.append("<h3>Role experiments: every check</h3>" + _checks_html(roles.results))
        from interp_icl.roles.console import hypothesis_line

        parts.append(f"<p>{html.escape(hypothesis_line(roles.hypothesis))}</p>")
        heads = [(role, h) for role, r in roles.results.items() for h in r.other_heads]
        if heads:
            parts.append("<h3>Other heads that matter</h3>" + _table(
                ["head", "found by", "effect (nats)", "by path", "attention", "encodes (held-out R²)"],
                [(h.unit, role, f"{h.effect:+.3f} ± {h.stderr:.3f} ({h.ablation})",
                  ", ".join(f"{k} {v:+.3f}" for k, v in h.paths.items()),
                  f"entropy {h.attention['entropy']:.2f}; full-match mass {h.attention['full_match_mass']:.2f}",
                  ", ".join(f"{k} {v:.2f}" for k, v in h.encodes.items()))
                 for role, h in heads],
            ))
        shown = table.head(200).astype(object)
        shown = shown.where(shown.notna(), "")
        parts.append(
            "<h3>Role experiments: measurements</h3>"
            + shown.to_html(
                index=False, float_format=lambda v: f"{v:.4g}", classes="roles", na_rep=""
            )
            + (
                f"<p>first 200 of {len(table)} rows; all in roles.csv</p>"
                if len(table) > 200
                else ""
            )
        )
    return "".join(parts)


def _circuit_section(page: ReportPage, loaded, n_sequences: int) -> str:
    """Every circuit stored for the checkpoint (when none is, the default `interp-icl circuit`
    result on `n_sequences` sequences, the hypothesis on the role experiments of the same size):
    the circuit beside the GIH hypothesis, and the faithfulness curves."""
    from interp_icl.circuits.faithfulness import FAITHFUL
    from interp_icl.models import layout
    from interp_icl.patching.fast_engine import unsupported_reason
    from interp_icl.runs.circuits import run_circuit, stored_circuits
    from interp_icl.viz.circuits import circuit_graph, faithfulness_figure

    reason = None if layout(loaded.model).block_type == "gih" else unsupported_reason(loaded.model)
    if reason is not None:
        return f"<p>No edge-level circuit: the graph is built for standard-layout and gih models ({html.escape(reason)}).</p>"
    reports = stored_circuits(loaded.path, loaded.step) or [
        run_circuit(loaded.path, loaded.step, n_sequences=n_sequences, role_sequences=n_sequences)]
    parts, curves = [], {}
    n_layers = int(loaded.model.cfg.n_layers)
    for r in reports:
        label = r.method + (f" ({r.settings['ig_steps']} steps)" if r.method == "eap-ig" else "") + \
            (f" (threshold {r.settings['threshold']:g})" if r.method == "acdc" else "")
        curves[label] = r.curve
        stem = f"circuit_{r.method}_{len(curves)}"
        size = r.circuit_size
        h = r.hypothesis
        low, high = h["interval"] or (float("nan"), float("nan"))
        title = f"{label}: circuit of {size if size is not None else 'every'} edges beside the GIH hypothesis"
        parts.append(f"<h3>{html.escape(label)}, {r.settings['n_sequences']} sequences</h3>")
        page.data[f"{stem}_edges.csv"] = r.edges
        fig, data = circuit_graph(r.edges, n_layers, title)
        parts.append(page.figure(fig, f"{stem}_graph.csv", data))
        parts.append(
            f"<p>The hypothesis's {h['edges']} edges alone recover {h['recovered']:.3f} [{low:.3f}, {high:.3f}] "
            "of the loss gap; the circuit contains, per edge type:</p>"
            + _table(["edge type", "in the circuit", "edges"],
                     [(name, f"{t['in_circuit']} of {len(t['edges'])}", ", ".join(t["edges"]) or "(no head named)")
                      for name, t in h["types"].items()])
            + f"<p>Edges the circuit adds: {html.escape(', '.join(r.added) or 'none')}.</p>")
    fig, data = faithfulness_figure(curves, FAITHFUL)
    parts.append(page.figure(fig, "circuit_faithfulness.csv", data))
    parts.append(
        "<p>Score of an edge = change of the mean target NLL when only that edge carries another "
        "sequence's value (exact), or its gradient estimate (EAP, EAP-IG); acdc prunes greedily on "
        "the KL from the model's output. The circuit is the fewest first edges that keep "
        f"{FAITHFUL:g} of the loss gap (acdc: the pruned set). Stored circuits come from "
        "<code>interp-icl circuit</code> and the sweep step <code>circuit</code>.</p>")
    return "".join(parts)


def _checks_html(results) -> str:
    """Every role check, rendered generically (`interp_icl.roles.Check`)."""

    def num(value) -> str:
        return "–" if value is None or value != value else f"{value:.4g}"

    rows = []
    for result in results.values():
        for c in result.checks:
            interval = "" if c.interval is None else f"[{num(c.interval[0])}, {num(c.interval[1])}]"
            verdict = {True: "holds", False: "does not hold", None: "–"}[c.holds]
            rows.append((f"{c.role}.{c.name}", num(c.measured), interval, f"{c.sense} {num(c.needed)}", c.null, verdict, c.evidence))
    return _table(["check", "measured", "95% interval", "needed", "null", "verdict", "evidence"], rows)


# ----------------------------------------------------------------------------- HTML


STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 20px; }
table { border-collapse: collapse; margin: 10px 0; font-size: 14px; }
td, th { border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; }
.yes { color: #137333; font-weight: 600; } .no { color: #c5221f; font-weight: 600; }
.data { color: #777; font-size: 12px; margin-top: 0; } nav a { margin-right: 14px; }
table.roles { font-size: 12px; }
"""


def write_page(page: ReportPage, out_path: Path, title: str) -> None:
    """Write the page and its data folder; each replaces the old one only once complete."""
    nav = "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in page.sections)
    body = "".join(
        f'<section id="{a}"><h2>{html.escape(t)}</h2>{content}</section>'
        for a, t, content in page.sections
    )
    document = (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style><script>{plotly.offline.get_plotlyjs()}</script>"
        f"{bundle_script()}</head><body><h1>{html.escape(title)}</h1><nav>{nav}</nav>{body}"
        "</body></html>"
    )
    data_dir = out_path.with_name(out_path.stem + "_data")
    with atomic_dir(data_dir) as tmp_dir:
        for name, content in page.data.items():
            if isinstance(content, pd.DataFrame):
                content.to_csv(tmp_dir / name, index=False)
            else:
                (tmp_dir / name).write_text(dumps(content, indent=1))
    write_text(out_path, document)


def _table(header: list[str], rows: list[tuple], raw_last: bool = False) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    lines = []
    for row in rows:
        cells = (
            [html.escape(str(v)) for v in row[:-1]]
            if raw_last
            else [html.escape(str(v)) for v in row]
        )
        if raw_last:
            cells.append(str(row[-1]))
        lines.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(lines)}</table>"


def _kv(mapping: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in mapping.items())


def _verdict_html(row) -> str:
    """A verdict row's verdict, green when it holds and red when it does not."""
    if row.holds is None:
        return html.escape(row.verdict)
    return f'<span class="{"yes" if row.holds else "no"}">{html.escape(row.verdict)}</span>'


def _yes(value: bool | None, yes: str = "yes", no: str = "no") -> str:
    if value is None:
        return "–"
    return f'<span class="yes">{yes}</span>' if value else f'<span class="no">{no}</span>'


__all__ = ("ReportPage", "build_report", "write_page")
