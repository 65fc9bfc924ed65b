"""The `interp-icl` command line: thin wrappers that parse, call the library and print.

Bad input of any kind ends with one line on stderr ("error: ...") and exit code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from interp_icl.config import RunConfig, with_overrides
from interp_icl.errors import ConfigError, InterpICLError, require
from interp_icl.presets import PRESETS, quickstart as quickstart_config
from interp_icl.runs.files import check_output_dir

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Train small transformers on in-context learning tasks and take their circuits apart.",
)
console = Console()


def _parse_parents(text: Optional[str]) -> Optional[list[int]]:
    if text is None:
        return None
    try:
        return [int(p) for p in text.replace(" ", "").split(",") if p]
    except ValueError:
        raise ConfigError(f"--parents must be comma-separated integers such as 1,2, got {text!r}") from None


def _base_config(config: Optional[Path], preset: Optional[str]) -> RunConfig:
    require(not (config and preset), "give either --config or --preset, not both")
    if config is not None:
        return RunConfig.from_file(config)
    if preset is not None:
        require(preset in PRESETS, f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
        return PRESETS[preset]()
    return quickstart_config()


def _train(config: RunConfig, run_dir: Path, force: bool, resume: bool, progress: bool) -> dict[str, Any]:
    from interp_icl.runs import open_run

    trainer = open_run(config, run_dir, resume=resume, force=force, progress=progress)
    if trainer.step >= trainer.total_steps:
        console.print(f"{run_dir} is already complete at step {trainer.step}")
    return trainer.run().final


def _loss_table(final: dict[str, Any], title: str) -> Table:
    if "icl_accuracy" in final:  # in-context classification
        return _classification_table(final, title)
    if "eval_loss_last" not in final:  # a continuous task: one prediction per sequence
        return _regression_table(final, title)
    table = Table(title=title)
    table.add_column("predictor")
    table.add_column("loss, all targets", justify="right")
    table.add_column("loss, last token", justify="right")
    table.add_column("model - predictor (all)", justify="right")
    table.add_row("model", f"{final['eval_loss']:.4f}", f"{final['eval_loss_last']:.4f}", "")
    names = [("bayes", "Bayes-optimal"), ("sgram_parents", "S-gram, true parents"), ("unigram", "unigram")]
    for key, label in names:
        if f"{key}_loss" in final:
            table.add_row(
                label,
                f"{final[f'{key}_loss']:.4f}",
                f"{final[f'{key}_loss_last']:.4f}",
                f"{final['eval_loss'] - final[f'{key}_loss']:+.4f}",
            )
    floored_all, floored_last = final.get("eval_floored_frac", 0.0), final.get("eval_floored_frac_last", 0.0)
    if floored_all or floored_last:
        table.caption = (
            f"the model gave {floored_all:.2%} of all targets ({floored_last:.2%} of last tokens) "
            "probability <= 1e-12; each counts as 27.6 nats"
        )
    return table


def _classification_table(final: dict[str, Any], title: str) -> Table:
    table = Table(title=title + " (cross-entropy in nats, accuracy)")
    for column in ("set", "loss", "accuracy"):
        table.add_column(column, justify="left" if column == "set" else "right")
    fmt = lambda key: f"{final[key]:.4f}" if key in final else "-"  # noqa: E731
    table.add_row("training distribution", fmt("eval_loss"), fmt("accuracy"))
    table.add_row("in-context (novel classes)", fmt("icl_loss"), fmt("icl_accuracy"))
    table.add_row("in-weights (class absent from context)", fmt("iwl_loss"), fmt("iwl_accuracy"))
    table.add_row("context-only oracle", fmt("bayes_loss"), fmt("bayes_accuracy"))
    table.add_row("uniform over labels", fmt("uniform_loss"), "-")
    table.caption = f"context-label accuracy (in-context set): {fmt('context_label_accuracy')}"
    return table


def _regression_table(final: dict[str, Any], title: str) -> Table:
    table = Table(title=title + " (half squared error of y_q)")
    for column in ("predictor", "loss", "model - predictor"):
        table.add_column(column, justify="left" if column == "predictor" else "right")
    table.add_row("model", f"{final['eval_loss']:.5f}", "")
    names = [("bayes", "Bayes (posterior mean)"), ("gd1", "one GD step, best lr"), ("zero", "predict 0")]
    for key, label in names:
        if f"{key}_loss" in final:
            value = final[f"{key}_loss"]
            table.add_row(label, f"{value:.5f}", f"{final['eval_loss'] - value:+.5f}")
    return table


@app.command()
def train(
    config: Optional[Path] = typer.Option(None, "--config", help="JSON run config (see docs)."),
    preset: Optional[str] = typer.Option(None, help="Start from a named config: " + ", ".join(PRESETS) + "."),
    name: Optional[str] = typer.Option(None, help="Run name (directory under --out-dir)."),
    out_dir: Path = typer.Option(Path("runs"), help="Where run directories live."),
    force: bool = typer.Option(False, help="Overwrite an existing run directory."),
    resume: bool = typer.Option(False, help="Continue the run from its newest checkpoint."),
    seed: Optional[int] = typer.Option(None),
    family: Optional[str] = typer.Option(None, help="Model family: standard, gih, lsa, block or classifier."),
    task: Optional[str] = typer.Option(None, help="Task: markov, repeated, regression or classification."),
    vocab_size: Optional[int] = typer.Option(None),
    parents: Optional[str] = typer.Option(None, help="Parent offsets, e.g. 1,2."),
    alpha: Optional[float] = typer.Option(None, help="Dirichlet concentration of kernel rows."),
    seq_len: Optional[int] = typer.Option(None),
    n_heads: Optional[int] = typer.Option(None),
    d_model: Optional[int] = typer.Option(None),
    d_head: Optional[int] = typer.Option(None, help="Width of each attention head (standard, block, classifier)."),
    n_layers: Optional[int] = typer.Option(None, help="Layers: standard 1-3 (default 2); lsa and block layers."),
    x_dim: Optional[int] = typer.Option(None, help="regression: input dimension d."),
    n_points: Optional[int] = typer.Option(None, help="regression: context points N."),
    window: Optional[int] = typer.Option(None, help="gih: layer-1 window M."),
    max_degree: Optional[int] = typer.Option(None, help="gih: largest head subset D."),
    steps: Optional[int] = typer.Option(None),
    batch_size: Optional[int] = typer.Option(None),
    lr: Optional[float] = typer.Option(None),
    optimizer: Optional[str] = typer.Option(None, help="sgd, adam or adamw."),
    loss_positions: Optional[str] = typer.Option(None, help="all or last."),
    data: Optional[str] = typer.Option(None, help="online or fixed."),
    eval_every: Optional[int] = typer.Option(None),
    device: Optional[str] = typer.Option(None, help="auto, cpu or cuda."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train a run: a config file or preset, with flags overriding its fields."""
    base = _base_config(config, preset)
    overrides = {
        "name": name,
        "seed": seed,
        "model.family": family,
        "task.name": task,
        "model.n_layers": n_layers,
        "task.x_dim": x_dim,
        "task.n_points": n_points,
        "task.vocab_size": vocab_size,
        "task.parents": _parse_parents(parents),
        "task.alpha": alpha,
        "task.seq_len": seq_len,
        "model.n_heads": n_heads,
        "model.d_model": d_model,
        "model.d_head": d_head,
        "model.window": window,
        "model.max_degree": max_degree,
        "train.steps": steps,
        "train.batch_size": batch_size,
        "train.lr": lr,
        "train.optimizer": optimizer,
        "train.loss_positions": loss_positions,
        "train.data": data,
        "train.eval_every": eval_every,
        "train.device": device,
    }
    cfg = with_overrides(base, overrides)
    check_output_dir(out_dir, "--out-dir")
    run_dir = out_dir / cfg.name
    final = _train(cfg, run_dir, force, resume, progress)
    console.print(_loss_table(final, f"{run_dir} at step {final['step']}"))


@app.command()
def quickstart(
    out_dir: Path = typer.Option(Path("runs"), help="Where run directories live."),
    steps: Optional[int] = typer.Option(None, help="Override the number of steps (smoke tests)."),
    n_sequences: int = typer.Option(256, help="Sequences of the analysis, the role experiments, the circuit and the report (fewer: a quicker, noisier look)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Train the default standard model on the default Markov task, analyse it, run the role
    experiments and write the report (RUN/report.html, with the edge-level circuit).

    Re-running continues (or reuses) runs/quickstart instead of overwriting it.
    """
    cfg = with_overrides(quickstart_config(), {"train.steps": steps})
    check_output_dir(out_dir, "--out-dir")
    require(n_sequences >= 4, f"--n-sequences must be at least 4, got {n_sequences}")
    run_dir = out_dir / cfg.name
    task = cfg.task
    console.print(
        f"[bold]quickstart[/bold]: {cfg.model.family} {cfg.model.n_layers}-layer transformer on in-context Markov chains "
        f"(d={task.vocab_size}, parents={list(task.parents)}, alpha={task.alpha}, "
        f"seq_len={task.seq_len}) -> {run_dir}"
    )
    final = _train(cfg, run_dir, force=False, resume=True, progress=progress)
    console.print(_loss_table(final, f"held-out loss at step {final['step']} (nats per token)"))
    ratio = final["eval_loss"] / final["bayes_loss"]
    console.print(f"model loss / Bayes loss = {ratio:.4f} (all targets)")
    from interp_icl.analysis.console import role_summary
    from interp_icl.runs import analyze_checkpoint, rundir

    from interp_icl.analysis.pipeline import AnalysisSettings

    analysis = analyze_checkpoint(run_dir, "last", AnalysisSettings(n_sequences=n_sequences))
    console.print(role_summary(analysis, f"three roles at step {analysis.step} (interp-icl analyze {run_dir} for more)"))
    _roles(run_dir, analysis.step, n_sequences, 0, run_dir / rundir.PATCHING_EXPORTS, progress, detailed=False)
    path = _write_report(run_dir, None, progress, n_sequences=n_sequences)
    from interp_icl.runs.circuits import stored_circuits

    for c in stored_circuits(run_dir, analysis.step):  # the report's circuit (and any other stored)
        h, size = c.hypothesis, c.circuit_size
        kept = f"{size} of {len(c.edges)} edges keep" if size is not None else f"no top-n of {len(c.edges)} edges keeps"
        console.print(f"circuit ({c.method}, {c.settings['n_sequences']} sequences): {kept} 0.9 of the loss gap; the "
                      f"GIH hypothesis's {h['edges']} edges alone keep {h['recovered']:.3f} (interp-icl circuit {run_dir} for more)")
    console.print(f"[bold]report[/bold]: {path} (open it in a browser; works offline)")
    console.print(
        "These verdicts are one seed's and can change with the seed or the machine; for rates over "
        "10 seeds: interp-icl sweep analyses/sweeps/quickstart_seeds.json --out sweeps/quickstart_seeds "
        "(docs/sweeps.md)"
    )


def _parse_step(text: str) -> int | str:
    if text in ("all", "last"):
        return text
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"--step must be a checkpoint step, 'last' or 'all', got {text!r}") from None


@app.command()
def analyze(
    run: Path = typer.Argument(..., help="Run directory, e.g. runs/quickstart."),
    step: str = typer.Option("last", help="Checkpoint step, 'last' or 'all' (dynamics over every checkpoint)."),
    passes: Optional[str] = typer.Option(
        None, help="Comma-separated passes (default: all of copier,selector,classifier,head_scores,theory)."
    ),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/analysis)."),
    n_sequences: int = typer.Option(256, help="Evaluation sequences drawn from the run's task."),
    seed: int = typer.Option(0, help="Seed of the evaluation sequences and resampling."),
    n_kernels: int = typer.Option(1000, help="Prior kernels for the theory pass."),
    cache: bool = typer.Option(True, help="Reuse cached per-checkpoint results."),
    progress: bool = typer.Option(True, help="Show a progress bar over checkpoints."),
) -> None:
    """Measure copier, selector and classifier roles (and head scores, theory) on a run's checkpoints."""
    from interp_icl.analysis.console import analysis_tables
    from interp_icl.analysis.dynamics import stage_order
    from interp_icl.analysis.pipeline import PASSES, AnalysisSettings
    from interp_icl.runs import analyze_checkpoint, dynamics, resolve_steps, rundir, write_outputs

    chosen_passes = PASSES if passes is None else tuple(p.strip() for p in passes.split(",") if p.strip())
    settings = AnalysisSettings(passes=chosen_passes, n_sequences=n_sequences, seed=seed, n_kernels=n_kernels)
    chosen = resolve_steps(run, _parse_step(step))
    out_dir = out if out is not None else run / rundir.ANALYSIS_EXPORTS
    check_output_dir(out_dir, "--out")
    if step != "all":
        analysis = analyze_checkpoint(run, chosen[0], settings, use_cache=cache)
        for table in analysis_tables(analysis, f"{run} at step {analysis.step}"):
            console.print(table)
        summary = {"run": str(run), "headline": analysis.headline(), **analysis.summary()}
        paths = write_outputs(analysis.table(), summary, out_dir, f"analysis_step{analysis.step}")
    else:
        from rich.progress import Progress

        with Progress(console=console, disable=not progress, transient=True) as bar:
            task_id = bar.add_task("analysing checkpoints", total=len(chosen))
            table, analyses = dynamics(run, chosen, settings, on_step=lambda _: bar.advance(task_id))
        final = analyses[chosen[-1]]
        for t in analysis_tables(final, f"{run} at step {final.step} (last of {len(chosen)} checkpoints)"):
            console.print(t)
        measured = {n for n, r in final.results.items() if "skipped" not in r.summary}
        order = stage_order(table, final) if {"copier", "classifier"} <= measured else None
        if order is not None:
            halves = ", ".join(f"{r} {s}" for r, s in order["half_rise_step"].items())
            tied = f"; ties at step(s) {', '.join(map(str, order['ties']))}: order undetermined" if order["ties"] else ""
            console.print(f"half-rise steps: {halves}; order {' -> '.join(order['order'])}{tied} "
                          f"(paper: {' -> '.join(order['paper_order'])})")
        summary = {"run": str(run), "steps": chosen, "stage_order": order, "final": final.summary()}
        paths = write_outputs(table, summary, out_dir, "dynamics")
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def patch(
    run: Path = typer.Argument(..., help="Run directory, e.g. runs/quickstart."),
    step: str = typer.Option("last", help="Checkpoint step or 'last'."),
    target: str = typer.Option("z", help="Site: resid_pre, resid_mid, resid_post, attn_out, mlp_out, z, q, k, v, pattern."),
    by: str = typer.Option("pos", help="'pos' (per position) or 'all' (every position at once)."),
    metric: str = typer.Option("last-loss", help="loss, last-loss, kl or last-kl (against the clean sequence)."),
    corrupt: str = typer.Option("parents", help="parents (change the last token's parents) or resample (fresh sequences)."),
    mode: str = typer.Option("denoise", help="denoise (clean into corrupted) or noise (corrupted into clean)."),
    ablate: Optional[str] = typer.Option(None, help="zero, mean or resample: ablate in the clean run instead of patching."),
    n_sequences: Optional[int] = typer.Option(None, help="Sequences drawn from the run's task (default 64; 256 with --roles)."),
    seed: int = typer.Option(0, help="Seed of the sequences and corruptions."),
    layers: Optional[str] = typer.Option(None, help="Comma-separated layers to patch, e.g. 0 (default: all; needed when layers differ in head count, as in gih models)."),
    memory_mb: float = typer.Option(1024.0, help="Memory budget of the patches run together (MB)."),
    attribution: bool = typer.Option(True, help="Also estimate the sweep by attribution patching and report its correlation."),
    roles: bool = typer.Option(False, "--roles", help="Run the copier, selector and classifier role experiments instead of a sweep."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/patching)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Patch every head/position of one site on a checkpoint; write the table, summary and heatmap.

    With --roles: the three component-role experiments with their verdicts (docs/patching.md)."""
    from interp_icl.patching.experiment import PatchSettings
    from interp_icl.runs import resolve_steps, run_patch, rundir, write_outputs
    from interp_icl.viz.html import write_figures_html
    from interp_icl.viz.patching import patch_heatmap

    require(step != "all", "--step all is not supported by patch; give a step or 'last'")
    (chosen,) = resolve_steps(run, _parse_step(step))
    out_dir = out if out is not None else run / rundir.PATCHING_EXPORTS
    check_output_dir(out_dir, "--out")
    if roles:
        _roles(run, chosen, 256 if n_sequences is None else n_sequences, seed, out_dir, progress, detailed=True)
        return
    settings = PatchSettings(
        site=target, by=by, metric=metric, corrupt=corrupt, mode=mode, ablate=ablate,
        n_sequences=64 if n_sequences is None else n_sequences, seed=seed, memory_mb=memory_mb,
        attribution=attribution, layers=_parse_layers(layers),
    )
    experiment = run_patch(run, chosen, settings, progress=progress)
    result = experiment.result
    console.print(_patch_table(experiment))
    how = f"{settings.ablate} ablation" if settings.ablate else f"{settings.mode} ({settings.corrupt} corruption)"
    line = f"{how}; metric {settings.metric}: baseline {result.baseline.mean():.4f}"
    if result.source is not None:
        line += f", source run {result.source.mean():.4f}"
    console.print(line + f"; engine {result.info['engine']}")
    if experiment.attribution is not None:
        a = experiment.attribution
        console.print(f"attribution patching vs exact: Pearson r = {a['pearson']:.3f} over {a['n_patches']} patches; "
                      f"Spearman = {a['spearman']:.3f} over the {a['n_ranked']} whose exact effect is above the noise floor")
    stem = experiment.stem
    paths = write_outputs(result.table, experiment.summary(), out_dir, stem)
    paths.append(write_figures_html([patch_heatmap(result)], out_dir / f"{stem}.html", f"{run} step {experiment.step}: {stem}"))
    console.print("wrote " + ", ".join(str(p) for p in paths))


@app.command()
def circuit(
    run: Path = typer.Argument(..., help="Run directory, e.g. runs/quickstart."),
    step: str = typer.Option("last", help="Checkpoint step or 'last'."),
    method: str = typer.Option("eap-ig", help="exact (exact edge patching), eap, eap-ig or acdc (greedy pruning)."),
    ig_steps: int = typer.Option(16, help="Integrated-gradient steps of eap-ig."),
    threshold: float = typer.Option(0.005, help="acdc: drop an edge when it raises the KL from the model's output by less (nats)."),
    edges: int = typer.Option(20, help="Edges to print (every edge is written)."),
    n_sequences: int = typer.Option(256, help="Sequences drawn from the run's task."),
    seed: int = typer.Option(0, help="Seed of the sequences."),
    out: Optional[Path] = typer.Option(None, help="Output directory (default RUN/circuits)."),
) -> None:
    """Score every edge of the head-granularity graph, measure the faithfulness of the top-n edges
    and set the circuit beside the GIH hypothesis (docs/patching.md, "Edge scores"); write every
    edge's score and the curve."""
    from contextlib import nullcontext

    from interp_icl.circuits.faithfulness import FAITHFUL
    from interp_icl.runs import resolve_steps, write_outputs
    from interp_icl.runs.circuits import check_settings, run_circuit
    from interp_icl.runs.tables import write_table

    check_settings(method, ig_steps, n_sequences, threshold)
    require(edges >= 1, f"--edges must be at least 1, got {edges}")
    require(step != "all", "--step all is not supported by circuit; give a step or 'last'")
    (chosen,) = resolve_steps(run, _parse_step(step))
    out_dir = out if out is not None else run / "circuits"
    check_output_dir(out_dir, "--out")
    with console.status(f"scoring every edge ({method})") if sys.stdout.isatty() else nullcontext():
        report = run_circuit(run, chosen, method, ig_steps, n_sequences, seed, threshold)
    what = "KL increase when the edge is dropped from the circuit so far" if method == "acdc" else \
        "metric change in nats when the edge carries another sequence's value"
    table = Table(title=f"top {min(edges, len(report.edges))} of {len(report.edges)} edges at step {report.step} ({method}; {what})")
    for column in ("rank", "edge", "score [95%]", "in circuit", "GIH hypothesis"):
        table.add_column(column)
    for r in report.edges.head(edges).itertuples():
        table.add_row(str(r.rank), r.edge, f"{r.score:+.4f} [{r.low:+.4f}, {r.high:+.4f}]", "yes" if r.in_circuit else "",
                      r.hypothesis if isinstance(r.hypothesis, str) else "")
    console.print(table)
    points = ", ".join(f"{int(c.edges)}: {c.recovered:.3f}" for c in report.curve.itertuples())
    console.print(f"faithfulness (recovered fraction of the loss gap by the first n edges): {points}")
    size = report.circuit_size
    rule = f"pruned at {threshold:g} nats" if method == "acdc" else f"the fewest edges keeping {FAITHFUL:g} of the gap"
    console.print(f"circuit ({rule}): {size if size is not None else 'not reached'} edges")
    h = report.hypothesis
    low, high = h["interval"] or (float("nan"), float("nan"))
    console.print(f"GIH hypothesis ({h['edges']} edges on the heads the role experiments name) alone recovers "
                  f"{h['recovered']:.3f} [{low:.3f}, {high:.3f}]; in the circuit, per edge type: "
                  + ", ".join(f"{name} {t['in_circuit']}/{len(t['edges'])}" for name, t in h["types"].items()))
    console.print(f"edges the circuit adds to the hypothesis: {', '.join(report.added) or 'none'}")
    stem = f"circuit_{method}_step{report.step}"
    paths = write_outputs(report.edges, report.summary(), out_dir, stem)
    paths += write_table(report.curve, out_dir, f"{stem}_faithfulness")
    console.print("wrote " + ", ".join(str(p) for p in paths))


def _parse_layers(text: Optional[str]) -> Optional[tuple[int, ...]]:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers such as 0,1, got {text!r}") from None


def _roles(run: Path, step: int, n_sequences: int, seed: int, out_dir: Path, progress: bool, detailed: bool) -> dict:
    """Run the role experiments on one checkpoint, print them, write RUN/patching/roles_step<N>.*."""
    from contextlib import nullcontext

    from interp_icl.roles.console import check_table, heads_table, hypothesis_line, verdict_table
    from interp_icl.runs import run_roles, write_outputs

    status = console.status("running the role experiments (copier, selector, classifier)") if progress else nullcontext()
    with status:
        report = run_roles(run, step, n_sequences=n_sequences, seed=seed)
    title = f"component roles at step {report.step}, causal checks (n = {n_sequences} sequences)"
    if detailed:
        console.print(check_table(report.results, f"every check (n = {n_sequences} sequences; docs/patching.md)"))
    else:
        title += f"; every check: interp-icl patch {run} --roles"
    console.print(verdict_table(report.results, title))
    heads = heads_table(report.results)
    if heads is not None:
        console.print(heads)
    console.print(hypothesis_line(report.hypothesis))
    summary = report.summary()
    paths = write_outputs(report.table, summary, out_dir, f"roles_step{report.step}")
    console.print("wrote " + ", ".join(str(p) for p in paths))
    return summary


@app.command()
def report(
    run: Path = typer.Argument(..., help="Run directory, e.g. runs/quickstart."),
    out: Optional[Path] = typer.Option(None, help="Report file (default RUN/report.html); its data goes to <name>_data/ beside it."),
    n_sequences: int = typer.Option(256, help="Sequences for the analysis passes and the role experiments."),
    n_kernels: int = typer.Option(1000, help="Prior kernels for the theory pass."),
    dynamics_sequences: int = typer.Option(64, help="Sequences per checkpoint for the training-dynamics curves."),
    progress: bool = typer.Option(True, help="Show what is being computed."),
) -> None:
    """Write one self-contained offline HTML report on a run: verdicts, dynamics, layers, attention, patching.

    Reuses the analysis cache, stored role experiments and patching sweeps; computes what is missing."""
    path = _write_report(
        run, out, progress, n_sequences=n_sequences, n_kernels=n_kernels, dynamics_sequences=dynamics_sequences
    )
    console.print(f"report: {path} ({path.stat().st_size / 1e6:.1f} MB); data: {path.with_name(path.stem + '_data')}")


def _write_report(run: Path, out: Optional[Path], progress: bool, **options: int) -> Path:
    from contextlib import nullcontext

    from interp_icl.viz.report import build_report

    status = console.status("writing the report") if progress else nullcontext()
    with status as live:
        def say(text: str) -> None:
            if live is not None:
                live.update(f"report: {text}")

        return build_report(run, out, progress=say, **options)


def _patch_table(experiment) -> Table:
    result = experiment.result
    table = result.table
    top = table.reindex(table["effect"].abs().sort_values(ascending=False).index).head(10)
    out = Table(title=f"largest effects: {result.site} by {experiment.settings.by} (n = {result.n} sequences)")
    for column in result.axes:
        out.add_column(column, justify="right")
    out.add_column("effect on " + result.metric, justify="right")
    out.add_column("recovered", justify="right")
    for _, row in top.iterrows():
        recovered = f"{row['recovered']:.2f}" if "recovered" in row else "-"
        out.add_row(*[str(int(row[a])) for a in result.axes], f"{row['effect']:+.4f} ± {row['effect_stderr']:.4f}", recovered)
    return out


@app.command()
def sweep(
    spec: Path = typer.Argument(..., help="Sweep spec (JSON): base, axes, seeds, do (docs/sweeps.md)."),
    out: Path = typer.Option(..., "--out", help="Sweep directory (made if missing; rerun to continue it)."),
    workers: Optional[int] = typer.Option(None, help="Cells at a time on the local Ray instance (default: CPU count)."),
    address: Optional[str] = typer.Option(None, help="Join a running Ray cluster: 'auto' or HOST:PORT (default: start a local instance)."),
    gpus_per_cell: float = typer.Option(0.0, help="GPUs each cell asks Ray for (a fraction shares one GPU)."),
    force: bool = typer.Option(False, help="Run this spec in a directory made with another one (unchanged finished cells are kept)."),
    report: bool = typer.Option(True, help="Write the sweep report (DIR/report.html)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Run a grid of run configs x seeds on Ray; write the results and summary tables and a report.

    Every cell is an ordinary run directory (DIR/runs/<cell>); rerunning skips finished cells.
    Exits 1 naming the cells that failed (the others still ran)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from interp_icl.sweeps import SweepSpec, run_sweep

    parsed = SweepSpec.from_file(spec)
    cells = parsed.cells()  # every cell's config is checked before anything runs
    check_output_dir(out, "--out")
    columns = [TextColumn("cells"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[state]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console, disable=not progress) as bar:
        task_id = bar.add_task("cells", total=len(cells), state="starting Ray")

        def update(counts: dict[str, int]) -> None:
            state = f"running {counts['running']}, failed {counts['failed']}"
            bar.update(task_id, completed=counts["done"] + counts["failed"], state=state)

        result = run_sweep(parsed, out, workers=workers, address=address, force=force,
                           gpus_per_cell=gpus_per_cell, on_progress=update)
    console.print(_sweep_table(result))
    console.print(f"wrote {out / 'results.csv'}, {out / 'summary.csv'} (and .parquet)")
    if report:
        from interp_icl.viz.sweep_report import build_sweep_report

        console.print(f"report: {build_sweep_report(result)}")
    if result.failed:
        errors = result.results.set_index("cell")["error"]
        detail = "; ".join(f"{name}: {errors[name]}" for name in result.failed[:5])
        more = f" (and {len(result.failed) - 5} more)" if len(result.failed) > 5 else ""
        print(f"error: {len(result.failed)} of {len(cells)} cells failed: {detail}{more}", file=sys.stderr)
        raise typer.Exit(1)


def _sweep_table(result) -> Table:
    """One block per setting: loss / Bayes and every verdict's rate with its interval."""
    from interp_icl.sweeps.aggregate import verdict_columns

    summary, axes = result.summary, list(result.spec.axes)
    verdicts = verdict_columns(result.results) if not result.results.empty else []
    table = Table(title=f"{result.path}: {len(result.results)} cells")
    for column in ("setting", "quantity", "mean ± stderr, or rate [95% Wilson interval]"):
        table.add_column(column)
    for _, row in summary.iterrows():
        label = ", ".join(f"{a}={row[a]}" for a in axes) or "base"
        label += f" ({int(row['n_cells']) - int(row['n_failed'])}/{int(row['n_cells'])} cells done)"
        lines = []
        if "loss_over_bayes_mean" in row and not _isnan(row["loss_over_bayes_mean"]):
            stderr = row["loss_over_bayes_stderr"]
            lines.append(("loss / Bayes", f"{row['loss_over_bayes_mean']:.4f}" + ("" if _isnan(stderr) else f" ± {stderr:.4f}")))
        for v in verdicts:
            n = row[f"{v}_n"]
            value = "-" if not n else f"{row[f'{v}_rate']:.2f} [{row[f'{v}_low']:.2f}, {row[f'{v}_high']:.2f}] (n={int(n)})"
            lines.append((v, value))
        for i, (quantity, value) in enumerate(lines):
            table.add_row(label if i == 0 else "", quantity, value, end_section=i == len(lines) - 1)
    return table


def _isnan(value: Any) -> bool:
    return value is None or (isinstance(value, float) and value != value)


@app.command()
def runs(out_dir: Path = typer.Option(Path("runs"), help="Where run directories live.")) -> None:
    """List runs with their last step, held-out loss and loss - Bayes."""
    require(out_dir.exists(), f"{out_dir} does not exist; train a run first")
    require(out_dir.is_dir(), f"--out-dir {out_dir} is a file, not a directory of runs")
    from interp_icl.runs import rundir

    table = Table(title=f"runs in {out_dir}")
    for column in ("run", "family", "task", "step", "loss", "loss - Bayes", "last-token loss - Bayes"):
        table.add_column(column, justify="left" if column in ("run", "family", "task") else "right")
    for run_dir in sorted(p for p in out_dir.iterdir() if (p / "config.json").is_file()):
        try:
            cfg = rundir.read_config(run_dir)
            rows = rundir.read_metrics(run_dir)
        except InterpICLError as exc:
            table.add_row(run_dir.name, "?", f"unreadable: {exc}", "", "", "", "")
            continue
        last = rows[-1] if rows else {}
        t = cfg.task
        task = f"{t.name} d={t.vocab_size} pa={list(t.parents)}" if t.name == "markov" else t.name
        fmt = lambda key: f"{last[key]:.4f}" if key in last else "-"  # noqa: E731
        table.add_row(
            run_dir.name, cfg.model.family, task, str(last.get("step", "-")),
            fmt("eval_loss"), fmt("loss_minus_bayes"), fmt("loss_minus_bayes_last"),
        )
    console.print(table)


click_app = typer.main.get_command(app)  # the click command behind `app` (also for mkdocs-click)


def run(argv: list[str] | None = None) -> int:
    """Run the command line `argv` (default: the process's) and return its exit code.

    Bad input of any kind — an unknown option or command, a value of the wrong type, a missing
    argument, an impossible config — prints one line ``error: ...`` on stderr and returns 2."""
    try:
        code = click_app.main(args=argv, prog_name="interp-icl", standalone_mode=False)
    except typer.TyperException as exc:  # usage errors: one line instead of a usage box
        message = " ".join((exc.format_message() if hasattr(exc, "format_message") else str(exc)).split())
        if not message:  # no arguments at all: the help was printed
            return getattr(exc, "exit_code", 2)
        print(f"error: {message}", file=sys.stderr)
        return 2
    except InterpICLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        print("interrupted; continue with --resume", file=sys.stderr)
        return 130
    return code if isinstance(code, int) else 0


def main() -> None:
    """Console-script entry point."""
    sys.exit(run())


if __name__ == "__main__":
    main()
