"""Edge scores on the known-answer zoo: each method's ranking against the edges the construction
uses (`interp_icl.models.zoo.ZooModel.circuit`), on sequences of the model's Markov task (the
role checks' sequences, `interp_icl.roles.validation`), resample source (sequence b gets sequence
b - 1's sender values), metric: mean NLL of targets max(pa)..T-1."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from interp_icl.circuits.recovery import precision_at_size, ranking_auc, truth_mask
from interp_icl.circuits.runner import model_graph
from interp_icl.circuits.scores import eap_scores, exact_scores
from interp_icl.patching.interventions import sequence_nll
from interp_icl.roles.validation import zoo_sequences

ZOO_EDGE_SEQUENCES = 16
ZOO_IG_STEPS = 8
METHODS = ("exact", "eap", "eap-ig")


def zoo_recovery(models: Sequence, n_sequences: int = ZOO_EDGE_SEQUENCES, ig_steps: int = ZOO_IG_STEPS,
                 seed: int = 0) -> pd.DataFrame:
    """One row per (zoo model with a stated circuit, method): edges, true edges, ROC AUC,
    precision (= recall) at the true circuit's size."""
    rows = []
    for zm in models:
        if zm.circuit is None:
            continue
        model = zm.build().eval()
        tokens, _ = zoo_sequences(zm, n_sequences, seed)
        source = tokens.roll(1, 0)
        t0 = max(zm.parents)

        def metric(logits, toks, model=model, t0=t0):
            return sequence_nll(model, logits, toks, t0)

        graph = model_graph(model)
        truth = truth_mask(graph, zm.circuit)
        scores = {
            "exact": exact_scores(model, graph, tokens, source, metric),
            "eap": eap_scores(model, graph, tokens, source, metric),
            "eap-ig": eap_scores(model, graph, tokens, source, metric, ig_steps=ig_steps),
        }
        for method, values in scores.items():
            magnitude = values.mean(1).abs()
            precision = precision_at_size(magnitude, truth)  # = recall at the true size
            rows.append({"model": zm.name, "breaks": zm.breaks, "method": method, "edges": len(graph.edges),
                         "true edges": int(truth.sum()), "auc": ranking_auc(magnitude, truth),
                         "precision": precision})
    return pd.DataFrame(rows)


def recovery_markdown(table: pd.DataFrame, ig_steps: int = ZOO_IG_STEPS) -> str:
    """Models × methods: ROC AUC and precision = recall at the true size."""
    names = {"exact": "exact", "eap": "EAP", "eap-ig": f"EAP-IG ({ig_steps} steps)"}
    lines = ["| zoo model | breaks | edges | true edges | " + " | ".join(f"{names[m]}: AUC, P = R at size" for m in METHODS) + " |",
             "| --- | --- | --- | --- | " + " | ".join("---" for _ in METHODS) + " |"]
    for model, group in table.groupby("model", sort=False):
        first = group.iloc[0]
        breaks = first["breaks"] if isinstance(first["breaks"], str) else "– (positive)"
        cells = []
        for m in METHODS:
            r = group[group["method"] == m].iloc[0]
            cells.append(f"{r['auc']:.3f}, {r['precision']:.2f}")
        lines.append(f"| {model} | {breaks} | {first['edges']} | {first['true edges']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
