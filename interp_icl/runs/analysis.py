"""The analysis passes on a run's checkpoints: one checkpoint, or every one (dynamics).

`analyze_checkpoint(run_dir, step, settings)` loads the checkpoint, runs
`interp_icl.analysis.analyze_model` and stores the result in the run's result store keyed by the
analysis settings (kind "analysis"); a second call with the same settings reads it back.
`dynamics(run_dir, steps, settings)` does this for every chosen checkpoint and stacks the tables;
the theory pass does not depend on the weights and is computed once per call.
`progress_over_checkpoints(run_dir)`: the in-context classification progress measures over the
checkpoints of a classification run. `attention_examples(run_dir, step)`: the sample sequences
that exercise the circuit most, with the checkpoint's attention patterns on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from interp_icl.analysis.dynamics import long_table
from interp_icl.analysis.examples import AttentionExample
from interp_icl.analysis.examples import attention_examples as examples_of
from interp_icl.analysis.icl_classification import progress_measures
from interp_icl.analysis.pipeline import Analysis, AnalysisSettings, analysis_from_record, analyze_model
from interp_icl.analysis.result import PassResult
from interp_icl.analysis.theory import theory
from interp_icl.errors import ConfigError, require
from interp_icl.runs import rundir, store
from interp_icl.runs.loading import load_run
from interp_icl.tasks import ClassificationTask
from interp_icl.seeding import generator

KIND = "analysis"


def analyze_checkpoint(
    run_dir: str | Path,
    step: int | str = "last",
    settings: AnalysisSettings | None = None,
    use_cache: bool = True,
    theory_result: PassResult | None = None,
) -> Analysis:
    """The Analysis of one checkpoint (`step`: a step or "last"), stored or computed now."""
    settings = settings or AnalysisSettings()
    (chosen,) = rundir.resolve_steps(run_dir, step)

    def compute() -> tuple[pd.DataFrame, dict]:
        run = load_run(run_dir, chosen)
        analysis = analyze_model(run.model, run.task, settings, theory_result)
        return analysis.table(), {n: r.summary for n, r in analysis.results.items()}

    stored = store.fetch(Path(run_dir), KIND, chosen, settings.key(), compute, use_stored=use_cache)
    analysis = analysis_from_record(stored.table, stored.summary, settings)
    analysis.step = chosen
    return analysis


def dynamics(
    run_dir: str | Path,
    steps: str | int | list[int] = "all",
    settings: AnalysisSettings | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[pd.DataFrame, dict[int, Analysis]]:
    """(long table over steps, {step: Analysis}) for the chosen checkpoints ("all", "last", a
    step or a list of steps). Table columns: ``step, pass, unit, metric, value, stderr, n`` plus
    the passes' label columns."""
    settings = settings or AnalysisSettings()
    chosen = steps if isinstance(steps, list) else rundir.resolve_steps(run_dir, steps)
    theory_result: PassResult | None = None
    if "theory" in settings.passes:
        run = load_run(run_dir, chosen[-1])
        if hasattr(run.task, "parents"):
            theory_result = theory(run.task, run.model, settings.n_kernels, settings.seed)
    analyses: dict[int, Analysis] = {}
    frames = []
    for step in chosen:
        analysis = analyze_checkpoint(run_dir, step, settings, theory_result=theory_result)
        analyses[step] = analysis
        frames.append(long_table(analysis))
        if on_step is not None:
            on_step(step)
    return pd.concat(frames, ignore_index=True), analyses


def progress_over_checkpoints(
    path: str | Path, n: int = 512, steps: Sequence[int] | None = None
) -> pd.DataFrame:
    """The progress measures at every checkpoint of the run at `path` (or the given `steps`), on
    fixed in-context and in-weights batches of `n` sequences drawn from the run seed: a long
    DataFrame with columns step, metric, value, stderr, n."""
    run = load_run(path)
    require(
        isinstance(run.task, ClassificationTask),
        f"the classification progress measures need a classification run; this is a "
        f"{run.config.task.name!r} run",
        ConfigError,
    )
    seed = run.config.seed
    icl = run.task.icl_batch(n, generator(seed, "analysis", "icl"))
    iwl = run.task.iwl_batch(n, generator(seed, "analysis", "iwl"))
    frames = []
    for step in steps if steps is not None else run.steps:
        model = load_run(path, step).model
        table = progress_measures(model, icl, iwl).table
        frames.append(
            pd.DataFrame(
                {
                    "step": step,
                    "metric": table["metric"],
                    "value": table["mean"],
                    "stderr": table["stderr"],
                    "n": table["n"],
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def attention_examples(run_dir: str | Path, step: int | str = "last", n: int = 2) -> list[AttentionExample]:
    """The `n` sample sequences of the run's task (seeded by the run's seed) that exercise the
    circuit most, with every layer's attention pattern at checkpoint `step`."""
    run = load_run(run_dir, step)
    return examples_of(run.model, run.task, run.config.seed, n)
