"""Edge scores, the faithfulness curve and the GIH hypothesis's edges on a run's checkpoint
(`interp-icl circuit`, the sweep step ``circuit``, the report's circuit section).

Sequences: `n_sequences` of the run's Markov task (seeded); source: sequence b gets sequence b-1's
sender values (resample); metric: mean NLL of targets max(pa)..T-1. Methods: "exact" (exact edge
patching), "eap", "eap-ig" (`interp_icl.circuits.scores`), "acdc" (greedy pruning by exact
patching on the KL from the model's output, `interp_icl.circuits.pruning`). The circuit is the first `edges_needed` edges of the
method's ranking (the smallest that keeps FAITHFUL of the loss gap; for acdc the pruned circuit);
the hypothesis is `interp_icl.circuits.hypothesis` drawn on the heads the role experiments name
(`run_roles`, stored in the run). Results are stored in the run (kind "circuit").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from interp_icl.circuits import eap_scores, exact_scores, model_graph
from interp_icl.circuits.faithfulness import (
    FAITHFUL,
    circuit_metric,
    edges_needed,
    faithfulness_curve,
    recovered_fraction,
)
from interp_icl.circuits.hypothesis import containment, gih_hypothesis_edges, hypothesis_edges
from interp_icl.circuits.pruning import ACDC_THRESHOLD, greedy_prune
from interp_icl.circuits.recovery import ranked
from interp_icl.errors import require
from interp_icl.jsonable import plain
from interp_icl.models import target_offset
from interp_icl.patching.fast_engine import unsupported_reason
from interp_icl.patching.interventions import sequence_kl, sequence_nll
from interp_icl.roles import ROLE_SEQUENCES
from interp_icl.roles.context import mean_interval
from interp_icl.runs import rundir, store
from interp_icl.runs.loading import load_run
from interp_icl.runs.patching import run_roles
from interp_icl.seeding import generator

METHODS = ("exact", "eap", "eap-ig", "acdc")
KIND = "circuit"
STORE_VERSION = 1


@dataclass
class CircuitReport:
    run: Path
    step: int
    method: str
    settings: dict  # ig_steps, threshold (acdc), n_sequences, seed, role_sequences
    edges: pd.DataFrame  # one row per edge in ranking order: rank, edge, score, interval, in_circuit, hypothesis type
    curve: pd.DataFrame  # faithfulness of the first n edges
    hypothesis: dict  # types {type: {"edges", "in_circuit"}}, recovered (fraction, interval) by the hypothesis alone

    @property
    def circuit_size(self) -> int | None:
        """Edges in the circuit: the pruned set's (acdc), else the fewest first edges that keep
        FAITHFUL of the loss gap (None if no size on the curve does)."""
        if self.method == "acdc":
            return int(self.edges["in_circuit"].sum())
        return edges_needed(self.curve)

    @property
    def added(self) -> list[str]:
        """Edges of the circuit that the hypothesis does not name."""
        inside = self.edges[self.edges["in_circuit"]]
        return inside.loc[inside["hypothesis"].isna(), "edge"].tolist()

    def summary(self) -> dict:
        return plain({"run": str(self.run), "step": self.step, "method": self.method, **self.settings,
                      "edges": len(self.edges), "faithful": FAITHFUL, "circuit_edges": self.circuit_size,
                      "curve": self.curve.to_dict("records"), "hypothesis": self.hypothesis, "added": self.added})


def check_settings(method: str, ig_steps: int, n_sequences: int, threshold: float = ACDC_THRESHOLD) -> None:
    require(method in METHODS, f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    require(ig_steps >= 1, f"--ig-steps must be at least 1, got {ig_steps}")
    require(n_sequences >= 4, f"--n-sequences must be at least 4, got {n_sequences}")
    require(threshold >= 0, f"--threshold must be >= 0 nats, got {threshold}")


def settings_of(method: str, ig_steps: int, n_sequences: int, seed: int, threshold: float, role_sequences: int) -> dict:
    return {"ig_steps": ig_steps if method == "eap-ig" else 1, "threshold": threshold if method == "acdc" else None,
            "n_sequences": n_sequences, "seed": seed, "role_sequences": role_sequences}


def run_circuit(run_dir: Path, step: int | str, method: str = "eap-ig", ig_steps: int = 16, n_sequences: int = 256,
                seed: int = 0, threshold: float = ACDC_THRESHOLD, role_sequences: int = ROLE_SEQUENCES,
                use_stored: bool = True) -> CircuitReport:
    """The circuit of one checkpoint (stored in the run; see the module docstring); the hypothesis
    is drawn on the heads of the role experiments on `role_sequences` sequences (stored too)."""
    check_settings(method, ig_steps, n_sequences, threshold)
    (chosen,) = rundir.resolve_steps(run_dir, step)
    settings = settings_of(method, ig_steps, n_sequences, seed, threshold, role_sequences)

    def compute() -> tuple[pd.DataFrame, dict]:
        report = _compute(Path(run_dir), chosen, method, settings)
        return report.edges, report.summary()

    key = {"version": STORE_VERSION, "method": method, **settings}
    stored = store.fetch(Path(run_dir), KIND, chosen, key, compute, use_stored=use_stored)
    s = stored.summary
    return CircuitReport(Path(run_dir), chosen, method, settings, stored.table, pd.DataFrame(s["curve"]), s["hypothesis"])


def _compute(run_dir: Path, step: int, method: str, settings: dict) -> CircuitReport:
    loaded = load_run(run_dir, step)
    task, model = loaded.task, loaded.model.eval()
    require(getattr(task.config, "name", None) == "markov",
            f"circuit needs an in-context Markov task (its corrupted baseline is another sequence of the "
            f"task); this run's task is {task.config.name!r}")
    graph = model_graph(model)
    reason = unsupported_reason(model) if graph.kind == "standard" else None
    require(reason is None, f"circuit needs a standard-layout or gih-family model: {reason}")
    tokens = task.sample(settings["n_sequences"], generator(settings["seed"], "circuit", "clean")).tokens
    source = tokens.roll(1, 0)
    t0 = max(task.config.parents)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, t0)

    if method == "exact":
        scores = exact_scores(model, graph, tokens, source, metric)
    elif method == "acdc":
        with torch.no_grad():
            reference = model(tokens)
        kept, scores = greedy_prune(model, graph, tokens, source, lambda logits, toks: sequence_kl(model, reference, logits, t0),
                                    settings["threshold"])
    else:
        scores = eap_scores(model, graph, tokens, source, metric, ig_steps=settings["ig_steps"])
    if method == "acdc":  # the pruned circuit first (in graph order), then the rest by |score|
        rest = [i for i in ranked(scores) if i not in set(kept)]
        order = sorted(kept) + rest
        sizes = sorted({0, len(kept), len(order)})
    else:
        order, sizes = ranked(scores), None
    with torch.no_grad():
        curve = faithfulness_curve(model, graph, tokens, source, metric, order, sizes=sizes, seed=settings["seed"],
                                   refine=method != "acdc")
    size = len(kept) if method == "acdc" else edges_needed(curve)
    circuit = {(graph.edges[i].sender, graph.edges[i].receiver) for i in order[:size or 0]}

    types = _hypothesis_types(run_dir, step, model, graph, task.config.parents, settings["role_sequences"], settings["seed"])
    type_of = {edge: name for name, edges in types.items() for edge in edges}
    hypothesised = {edge for edges in types.values() for edge in edges}
    with torch.no_grad():
        values = circuit_metric(model, graph, tokens, source, metric,
                                [[], list(graph.edges), [e for e in graph.edges if (e.sender, e.receiver) in hypothesised]])
    fraction, interval = recovered_fraction(values[0], values[1], values[2], settings["seed"])
    inside = containment(types, circuit)
    hypothesis = {"types": {name: {"edges": [f"{s}->{r}" for s, r in sorted(edges)], "in_circuit": inside[name]}
                            for name, edges in types.items()},
                  "edges": len(hypothesised), "recovered": fraction, "interval": interval}

    rows = []
    for rank, i in enumerate(order, 1):
        edge = graph.edges[i]
        mean, stderr, ci = mean_interval(scores[i])
        rows.append({"rank": rank, "edge": edge.name, "sender": edge.sender, "receiver": edge.receiver, "score": mean,
                     "stderr": stderr, "low": ci[0] if ci else None, "high": ci[1] if ci else None,
                     "in_circuit": size is not None and rank <= size,
                     "hypothesis": type_of.get((edge.sender, edge.receiver))})
    return CircuitReport(run_dir, step, method, settings, pd.DataFrame(rows), curve, hypothesis)


def _hypothesis_types(run_dir: Path, step: int, model, graph, parents, role_sequences: int,
                      seed: int) -> dict[str, frozenset[tuple[str, str]]]:
    """The hypothesis's edge types on the heads the (stored) role experiments name."""
    roles = run_roles(run_dir, step, n_sequences=role_sequences, seed=seed)
    off = target_offset(model)
    copiers: dict[int, list[str]] = {}
    for name, heads in roles.results["copier"].details.get("sets", {}).items():
        _, p, side = name.split("_")
        offset = int(p) if side == "key" else int(p) - off
        copiers[offset] = sorted(set(copiers.get(offset, [])) | set(heads))
    classifiers = roles.results["classifier"].details.get("heads", [])
    if graph.kind == "gih":
        return gih_hypothesis_edges(copiers, classifiers, parents, model.subsets)
    return hypothesis_edges(copiers, classifiers, parents)


def stored_circuits(run_dir: Path, step: int) -> list[CircuitReport]:
    """Every circuit result stored for the checkpoint (`interp-icl circuit`, the sweep step), in
    folder order."""
    out = []
    for s in store.entries(Path(run_dir), KIND, step):
        if s.settings.get("version") != STORE_VERSION:
            continue
        settings = {k: v for k, v in s.settings.items() if k not in ("version", "method")}
        out.append(CircuitReport(Path(run_dir), step, s.settings["method"], settings, s.table,
                                 pd.DataFrame(s.summary["curve"]), s.summary["hypothesis"]))
    return out
