"""Run the analysis passes on a model: one shared set of sequences, every pass, one result.

`analyze_model(model, task, ...)` runs the chosen passes on sequences drawn from `task` and returns
an `Analysis`: ``results`` {pass: PassResult}, ``table()`` (all passes' rows with a ``pass``
column) and ``summary()``. The passes share one set of evaluation sequences, drawn from the task
with a generator seeded by (seed, "analysis", n_sequences); the selector's selected set feeds the
classifier and the theory pass's comparison.

Checkpoints of a run directory are analysed (and their results stored) by
`interp_icl.runs.analyze_checkpoint`; this module never touches the file system.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from interp_icl.analysis.classifier import classifier
from interp_icl.analysis.common import ActivationMemo
from interp_icl.analysis.copier import copier, default_max_offset
from interp_icl.analysis.head_scores import head_scores
from interp_icl.analysis.result import PassResult, make_table, set_label
from interp_icl.analysis.selector import selector
from interp_icl.analysis.theory import theory
from interp_icl.analysis.verdicts import verdict_rows
from interp_icl.errors import require
from interp_icl.models.layout import NO_CIRCUIT, ModelLayout, layout
from interp_icl.tasks import Task, is_continuous
from interp_icl.seeding import generator

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
        """The three-role summary: copied offsets, selected set, closest strategy, theory, and
        each verdict of `verdict_rows` ({key: holds})."""
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
        summaries = {name: result.summary for name, result in self.results.items()}
        out["verdicts"] = {row.key: row.holds for row in verdict_rows(summaries)}
        return out


def parents_of(task: Task) -> tuple[int, ...] | None:
    return tuple(task.parents) if hasattr(task, "parents") else None


def analyze_model(
    model: nn.Module, task: Task, settings: AnalysisSettings | None = None, theory_result: PassResult | None = None
) -> Analysis:
    """Run `settings.passes` on `model` with sequences from `task`. `theory_result`: a theory
    pass computed earlier for this task (it does not depend on the weights).

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


def analysis_from_record(table: pd.DataFrame, summary: dict[str, Any], settings: AnalysisSettings) -> Analysis:
    """The Analysis whose ``table()`` (without a step column) and per-pass summaries are these:
    the inverse of (``analysis.table()``, ``{pass: result.summary}``)."""
    results = {}
    for name in settings.passes:
        if name not in summary:
            continue
        rows = table[table["pass"] == name].drop(columns=["pass"])
        results[name] = PassResult(name, rows.dropna(axis=1, how="all").reset_index(drop=True), summary[name])
    return Analysis(results, settings=settings.key())


__all__ = ("PASSES", "Analysis", "AnalysisSettings", "analysis_from_record", "analyze_model")
