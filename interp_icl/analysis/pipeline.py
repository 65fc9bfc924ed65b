"""Run the analysis passes on a model, a checkpoint of a run, or every checkpoint (with a cache).

`analyze_model(model, task, ...)` runs the chosen passes on sequences drawn from `task` and returns
an `Analysis`: ``results`` {pass: PassResult}, ``table()`` (all passes' rows with a ``pass``
column) and ``summary()``. The passes share one set of evaluation sequences, drawn from the task
with a generator seeded by (seed, "analysis", n_sequences); the selector's selected set feeds the
classifier and the theory pass's comparison.

`analyze_checkpoint(run_dir, step, ...)` does the same for one checkpoint and caches the result in
``<run>/analysis/step_XXXXXXXX/`` (``table.parquet`` + ``summary.json``), keyed by the analysis
settings; a second call with the same settings reads the cache. The theory pass depends only on
the task (and the model's window), so it is computed once per run, not per checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from interp_icl.analysis.classifier import classifier
from interp_icl.analysis.common import ActivationMemo
from interp_icl.analysis.copier import copier, default_max_offset
from interp_icl.analysis.head_scores import head_scores
from interp_icl.analysis.result import PassResult, _jsonable, make_table, set_label
from interp_icl.analysis.selector import selector
from interp_icl.analysis.theory import theory
from interp_icl.errors import InterpICLError, require
from interp_icl.models.layout import NO_CIRCUIT, ModelLayout, layout
from interp_icl.tasks import Task, is_continuous
from interp_icl.training.seeding import generator

PASSES = ("copier", "selector", "classifier", "head_scores", "theory")
CACHE_VERSION = 1


def shared_hooks(shape: ModelLayout) -> tuple[str, ...]:
    """The hooks the passes share, for a memo: the copier layers' patterns and outputs, the
    compared feature, the last layer's input, q, k and pattern, and the logits."""
    last = shape.classifier_layer
    copiers = [f"blocks.{ell}.attn.{n}" for ell in shape.copier_layers for n in ("hook_pattern", "hook_z")]
    return (
        *copiers, shape.compared_feature,
        f"blocks.{last}.hook_resid_pre", f"blocks.{last}.attn.hook_q", f"blocks.{last}.attn.hook_k",
        f"blocks.{last}.attn.hook_pattern", "unembed.hook_out",
    )


@dataclass
class AnalysisSettings:
    passes: tuple[str, ...] = PASSES
    n_sequences: int = 256
    seed: int = 0
    n_kernels: int = 1000  # theory Monte Carlo

    def __post_init__(self) -> None:
        self.passes = tuple(dict.fromkeys(self.passes))
        unknown = [p for p in self.passes if p not in PASSES]
        require(not unknown, f"unknown analysis pass(es) {', '.join(unknown)}; choose from {', '.join(PASSES)}")
        require(self.passes, "choose at least one analysis pass")
        require(isinstance(self.n_sequences, int) and self.n_sequences >= 2, f"n_sequences must be an integer >= 2, got {self.n_sequences!r}")
        require(isinstance(self.n_kernels, int) and self.n_kernels >= 2, f"n_kernels must be an integer >= 2, got {self.n_kernels!r}")

    def key(self) -> dict[str, Any]:
        return {"version": CACHE_VERSION, "passes": list(self.passes), "n_sequences": self.n_sequences,
                "seed": self.seed, "n_kernels": self.n_kernels}


@dataclass
class Analysis:
    results: dict[str, PassResult]
    step: int | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def table(self) -> pd.DataFrame:
        """Every pass's rows, with ``pass`` (and ``step`` when known) columns first."""
        frames = []
        for name, result in self.results.items():
            frame = result.table.copy()
            frame.insert(0, "pass", name)
            frames.append(frame)
        table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        if self.step is not None:
            table.insert(0, "step", self.step)
        return table

    def summary(self) -> dict[str, Any]:
        return {"step": self.step, "settings": self.settings, **{n: r.summary for n, r in self.results.items()}}

    def headline(self) -> dict[str, Any]:
        """The three-role summary: copied offsets, selected set, closest strategy, theory."""
        out: dict[str, Any] = {}
        skipped = {n: r.summary["skipped"] for n, r in self.results.items() if "skipped" in r.summary}
        if skipped:  # a 1-layer model: the circuit passes were skipped
            ran = {n: r for n, r in self.results.items() if n not in skipped}
            return {"skipped": skipped, **Analysis(ran).headline()}
        if "copier" in self.results:
            s = self.results["copier"].summary
            out["copied_attn_offsets"] = s["copied_attn_offsets"]
            out["copied_parent_offsets"] = s["copied_parent_offsets"]
            out["residual_parent_offsets"] = s["residual_parent_offsets"]
            out["copier_heads"] = {u: (h["attn_offset"], round(h["sharpness"], 3)) for u, h in s["heads"].items()}
        if "selector" in self.results:
            s = self.results["selector"].summary
            out["selected_offsets"] = s["selected_offsets"]
            out["selection_margin"] = s["margin"]
            out["selection_confident"] = s["confident"]
        if "classifier" in self.results:
            s = self.results["classifier"].summary
            out["closest_strategy"] = s["closest_strategy"]
            out["closest_sgram"] = s["closest_sgram"]
        if "head_scores" in self.results:
            s = self.results["head_scores"].summary
            out["previous_token_heads"] = s["previous_token_heads"]
            out["induction_heads"] = s["induction_heads"]
        if "theory" in self.results:
            s = self.results["theory"].summary
            out["theory_predicted"] = s["predicted"]
        return out


def parents_of(task: Task) -> tuple[int, ...] | None:
    return tuple(task.parents) if hasattr(task, "parents") else None


def analyze_model(
    model: nn.Module, task: Task, settings: AnalysisSettings | None = None, theory_result: PassResult | None = None
) -> Analysis:
    """Run `settings.passes` on `model` with sequences from `task`.

    The copier pass covers every layer before the last, the selector and classifier passes the last
    layer (`interp_icl.models.layout`). A 1-layer model has no copier -> classifier circuit: those
    three passes are skipped, each with an empty table and the summary ``{"skipped": reason}``."""
    settings = settings or AnalysisSettings()
    require(
        not is_continuous(task),
        f"the analysis passes need a token task; this is a {task.config.name!r} run (its "
        "studies are in analyses/)",
    )
    require(int(model.cfg.d_vocab) == task.vocab_size, f"model vocabulary {model.cfg.d_vocab} != task vocabulary {task.vocab_size}")
    parents = parents_of(task)
    gen = generator(settings.seed, "analysis", settings.n_sequences)
    batch = task.sample(settings.n_sequences, gen)
    tokens = batch.tokens
    max_offset = default_max_offset(model, parents)
    shape = layout(model)
    results: dict[str, PassResult] = {}
    memo = ActivationMemo(shared_hooks(shape))  # one forward per distinct token batch for all passes
    selected = None
    with torch.no_grad():
        circuit_passes = [p for p in ("copier", "selector", "classifier") if p in settings.passes]
        if circuit_passes and not shape.has_circuit:
            for name in circuit_passes:
                results[name] = PassResult(name, make_table([]), {"skipped": NO_CIRCUIT})
            circuit_passes = []
        if "copier" in circuit_passes:
            results["copier"] = copier(
                model, tokens, parents, max_offset, layer=shape.copier_layers, seed=settings.seed, memo=memo
            )
        if "selector" in circuit_passes:
            results["selector"] = selector(model, tokens, parents, max_offset, seed=settings.seed, memo=memo)
            selected = tuple(results["selector"].summary["selected_offsets"]) or None
        if "classifier" in circuit_passes:
            results["classifier"] = classifier(
                model, tokens, parents, selected, bayes_probs=task.bayes_probs(batch), memo=memo
            )
            if parents is not None and hasattr(task, "alpha"):
                results["classifier"].summary["bayes_is"] = (
                    f"the in-context {set_label(parents)}-gram with beta = alpha = {task.alpha} (Dirichlet posterior mean)"
                )
        if "head_scores" in settings.passes:
            results["head_scores"] = head_scores(model, seed=settings.seed)
    if "theory" in settings.passes and parents is not None:
        result = theory_result or theory(task, model, n_kernels=settings.n_kernels, seed=settings.seed)
        results["theory"] = _with_agreement(result, selected)
    return Analysis(results, settings=settings.key())


def _with_agreement(result: PassResult, selected: tuple[int, ...] | None) -> PassResult:
    summary = dict(result.summary)
    summary["model_selected"] = list(selected) if selected else None
    summary["agrees"] = (
        {c: list(selected) == s for c, s in summary["predicted"].items()} if selected else None
    )
    return PassResult(result.name, result.table, summary)


def cache_dir(run_dir: Path, step: int, settings: AnalysisSettings | None = None) -> Path:
    """``RUN/analysis/step_<N>`` for the default settings, ``step_<N>-<hash>`` for others, so
    analyses with different settings (e.g. the report's cheaper dynamics) do not evict each other."""
    name = f"step_{step:08d}"
    if settings is not None and settings.key() != AnalysisSettings().key():
        digest = hashlib.sha1(json.dumps(settings.key(), sort_keys=True).encode()).hexdigest()
        name += f"-{digest[:8]}"
    return Path(run_dir) / "analysis" / name


def analyze_checkpoint(
    run_dir: str | Path,
    step: int | str = "last",
    settings: AnalysisSettings | None = None,
    use_cache: bool = True,
    theory_result: PassResult | None = None,
) -> Analysis:
    """Analyse one checkpoint of a run, reading or writing its cache."""
    from interp_icl.training.loading import load_run

    settings = settings or AnalysisSettings()
    run = load_run(run_dir, step)
    where = cache_dir(run.path, run.step, settings)
    if use_cache:
        cached = _read_cache(where, settings)
        if cached is not None:
            cached.step = run.step
            return cached
    analysis = analyze_model(run.model, run.task, settings, theory_result)
    analysis.step = run.step
    _write_cache(where, analysis, settings)
    return analysis


def _read_cache(where: Path, settings: AnalysisSettings) -> Analysis | None:
    key_file = where / "settings.json"
    if not key_file.is_file():
        return None
    try:
        if json.loads(key_file.read_text()) != settings.key():
            return None
        summary = json.loads((where / "summary.json").read_text())
        table = pd.read_parquet(where / "table.parquet")
    except (OSError, ValueError):
        return None  # a damaged cache is recomputed
    results = {}
    for name in settings.passes:
        if name not in summary:
            continue
        rows = table[table["pass"] == name].drop(columns=["pass"]).dropna(axis=1, how="all").reset_index(drop=True)
        results[name] = PassResult(name, rows, summary[name])
    return Analysis(results, settings=settings.key())


def _write_cache(where: Path, analysis: Analysis, settings: AnalysisSettings) -> None:
    """Write the cache atomically: a temporary sibling directory renamed into place."""
    where.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=where.name + ".", dir=where.parent))
    mask = os.umask(0)
    os.umask(mask)
    tmp.chmod(0o777 & ~mask)  # mkdtemp makes it private; the cache is an ordinary directory
    try:
        table = analysis.table()
        if "step" in table.columns:
            table = table.drop(columns=["step"])
        _parquet_safe(table).to_parquet(tmp / "table.parquet", index=False)
        summary = {n: r.summary for n, r in analysis.results.items()}
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2, default=_jsonable))
        (tmp / "settings.json").write_text(json.dumps(settings.key()))
        if where.exists():
            shutil.rmtree(where)
        tmp.rename(where)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _parquet_safe(table: pd.DataFrame) -> pd.DataFrame:
    """Mixed-type label columns (ints with NaN/None) as nullable Int64 or strings."""
    table = table.copy()
    for column in table.columns:
        if table[column].dtype == object:
            values = table[column].dropna()
            if len(values) and all(isinstance(v, (int,)) and not isinstance(v, bool) for v in values):
                table[column] = table[column].astype("Int64")
            elif len(values) and not all(isinstance(v, str) for v in values):
                table[column] = table[column].astype(str)
        elif table[column].dtype == float and column in ("layer", "head", "offset", "parent_offset", "source_head"):
            table[column] = table[column].astype("Int64")
    return table


def write_outputs(analysis_table: pd.DataFrame, summary: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write ``<stem>.csv``, ``<stem>.parquet`` and ``<stem>.json`` into `out_dir` atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    table = _parquet_safe(analysis_table)
    paths = [out_dir / f"{stem}.csv", out_dir / f"{stem}.parquet", out_dir / f"{stem}.json"]
    writers = [
        lambda p: table.to_csv(p, index=False),
        lambda p: table.to_parquet(p, index=False),
        lambda p: p.write_text(json.dumps(summary, indent=2, default=_jsonable)),
    ]
    for path, write in zip(paths, writers):
        tmp = path.with_name(path.name + ".tmp")
        try:
            write(tmp)
            tmp.replace(path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    return paths


def resolve_steps(run_dir: str | Path, step: int | str) -> list[int]:
    """"all" -> every checkpoint, "last" -> the newest, an int -> [that step] (checked)."""
    from interp_icl.training import rundir

    require(Path(run_dir).is_dir(), f"run directory {run_dir} does not exist", InterpICLError)
    steps = rundir.list_checkpoints(Path(run_dir))
    require(steps, f"{run_dir} has no checkpoints", InterpICLError)
    if step == "all":
        return steps
    if step == "last":
        return [steps[-1]]
    require(isinstance(step, int) and step in steps, f"{run_dir} has no checkpoint at step {step}")
    return [int(step)]


__all__ = (
    "PASSES", "Analysis", "AnalysisSettings", "analyze_model", "analyze_checkpoint", "resolve_steps", "write_outputs",
)
