"""Edge scores and the faithfulness curve on a run's checkpoint (`interp-icl circuit`).

Sequences: `n_sequences` of the run's Markov task (seeded); source: sequence b gets sequence b-1's
sender values (resample); metric: mean NLL of targets max(pa)..T-1. Methods: "exact" (exact edge
patching), "eap", "eap-ig" (`interp_icl.circuits`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from interp_icl.circuits import eap_scores, exact_scores, standard_graph
from interp_icl.circuits.faithfulness import FAITHFUL, edges_needed, faithfulness_curve
from interp_icl.errors import require
from interp_icl.patching.fast_engine import unsupported_reason
from interp_icl.patching.interventions import sequence_nll
from interp_icl.roles.context import mean_interval
from interp_icl.runs.loading import load_run
from interp_icl.seeding import generator

METHODS = ("exact", "eap", "eap-ig")


@dataclass
class CircuitReport:
    run: Path
    step: int
    method: str
    ig_steps: int
    n_sequences: int
    edges: pd.DataFrame  # one row per edge, ranked by |mean score|
    curve: pd.DataFrame  # faithfulness of the top-n edges

    def summary(self) -> dict:
        return {"run": str(self.run), "step": self.step, "method": self.method, "ig_steps": self.ig_steps,
                "n_sequences": self.n_sequences, "edges": len(self.edges),
                f"edges_for_{FAITHFUL:g}": edges_needed(self.curve), "curve": self.curve.to_dict("records")}


def check_settings(method: str, ig_steps: int, n_sequences: int) -> None:
    require(method in METHODS, f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    require(ig_steps >= 1, f"--ig-steps must be at least 1, got {ig_steps}")
    require(n_sequences >= 4, f"--n-sequences must be at least 4, got {n_sequences}")


def run_circuit(run_dir: Path, step: int, method: str = "eap-ig", ig_steps: int = 16, n_sequences: int = 256,
                seed: int = 0) -> CircuitReport:
    check_settings(method, ig_steps, n_sequences)
    loaded = load_run(run_dir, step)
    task, model = loaded.task, loaded.model.eval()
    require(getattr(task.config, "name", None) == "markov",
            f"circuit needs an in-context Markov task (its corrupted baseline is another sequence of the "
            f"task); this run's task is {task.config.name!r}")
    reason = unsupported_reason(model)
    require(reason is None, f"circuit needs a standard-layout model (the gih family's graph is not built yet): {reason}")
    tokens = task.sample(n_sequences, generator(seed, "circuit", "clean")).tokens
    source = tokens.roll(1, 0)
    t0 = max(task.config.parents)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, t0)

    graph = standard_graph(model)
    if method == "exact":
        scores = exact_scores(model, graph, tokens, source, metric)
    else:
        scores = eap_scores(model, graph, tokens, source, metric, ig_steps=1 if method == "eap" else ig_steps)
    rows = []
    for edge, values in zip(graph.edges, scores):
        mean, stderr, interval = mean_interval(values)
        rows.append({"edge": edge.name, "sender": edge.sender, "receiver": edge.receiver, "score": mean,
                     "stderr": stderr, "low": interval[0] if interval else None, "high": interval[1] if interval else None})
    table = pd.DataFrame(rows)
    table = table.reindex(table["score"].abs().sort_values(ascending=False, kind="stable").index).reset_index(drop=True)
    table.insert(0, "rank", range(1, len(table) + 1))
    with torch.no_grad():
        curve = faithfulness_curve(model, graph, tokens, source, metric, scores, seed=seed)
    return CircuitReport(Path(run_dir), loaded.step, method, ig_steps if method == "eap-ig" else 1, n_sequences, table, curve)
