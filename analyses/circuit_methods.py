"""EAP and EAP-IG against exact edge patching on one trained run.

    python analyses/circuit_methods.py RUN [--n-sequences 256] [--ig-steps 16] [--threshold 0.005]

On `n_sequences` sequences of the run's Markov task (as `interp-icl circuit`): each method's edge
scores, its agreement with the exact scores (Spearman rank correlation of the mean scores, overlap
of the top-k edges for k = the exact ranking's 90% circuit, largest absolute error), the edges
each ranking needs to recover 90% of the loss gap, and its wall time; for ACDC-style greedy
pruning (`circuits.pruning`, KL from the model's output) the pruned circuit's size, what it keeps
and its overlap with the exact top-k.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from interp_icl import load_run
from interp_icl.circuits import eap_scores, exact_scores, standard_graph
from interp_icl.circuits.faithfulness import edges_needed, faithfulness_curve
from interp_icl.circuits.pruning import ACDC_THRESHOLD, greedy_prune
from interp_icl.circuits.recovery import ranked
from interp_icl.patching.interventions import sequence_kl, sequence_nll
from interp_icl.seeding import generator


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return float(torch.corrcoef(torch.stack([ra, rb]))[0, 1])


def main(argv: list[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(prog="analyses/circuit_methods.py")
    parser.add_argument("run", type=Path)
    parser.add_argument("--n-sequences", type=int, default=256)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--threshold", type=float, default=ACDC_THRESHOLD, help="acdc's KL threshold (nats)")
    args = parser.parse_args(argv)
    loaded = load_run(args.run, "last")
    model, task = loaded.model.eval(), loaded.task
    tokens = task.sample(args.n_sequences, generator(0, "circuit", "clean")).tokens  # as interp-icl circuit
    source = tokens.roll(1, 0)
    t0 = max(task.config.parents)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, t0)

    graph = standard_graph(model)
    methods = {"exact": lambda: exact_scores(model, graph, tokens, source, metric),
               "eap": lambda: eap_scores(model, graph, tokens, source, metric),
               f"eap-ig ({args.ig_steps})": lambda: eap_scores(model, graph, tokens, source, metric, ig_steps=args.ig_steps)}
    scores, seconds = {}, {}
    for name, call in methods.items():
        start = time.perf_counter()
        scores[name] = call()
        seconds[name] = time.perf_counter() - start
    exact = scores["exact"].mean(1)
    needed = {name: edges_needed(faithfulness_curve(model, graph, tokens, source, metric, ranked(s))) for name, s in scores.items()}
    k = needed["exact"] or len(graph.edges)
    top_exact = set(exact.abs().argsort(descending=True)[:k].tolist())
    rows = []
    for name, s in scores.items():
        mean = s.mean(1)
        top = set(mean.abs().argsort(descending=True)[:k].tolist())
        rows.append({"method": name, "edges for 0.9": needed[name], f"top-{k} overlap with exact": len(top & top_exact),
                     "Spearman vs exact": spearman(mean, exact), "largest |error| vs exact (nats)": float((mean - exact).abs().max()),
                     "largest |exact| (nats)": float(exact.abs().max()), "seconds": round(seconds[name], 1)})
    start = time.perf_counter()
    with torch.no_grad():
        reference = model(tokens)
    kept, _ = greedy_prune(model, graph, tokens, source, lambda logits, toks: sequence_kl(model, reference, logits, t0),
                           args.threshold)
    seconds_acdc = time.perf_counter() - start
    order = kept + [i for i in range(len(graph.edges)) if i not in set(kept)]  # the pruned circuit first
    pruned = faithfulness_curve(model, graph, tokens, source, metric, order, sizes=[len(kept)], refine=False)
    rows.append({"method": f"acdc (KL threshold {args.threshold:g})", "edges for 0.9": f"{len(kept)} (pruned; keeps {pruned['recovered'].iloc[0]:.3f})",
                 f"top-{k} overlap with exact": len(set(kept) & top_exact), "Spearman vs exact": None,
                 "largest |error| vs exact (nats)": None, "largest |exact| (nats)": float(exact.abs().max()),
                 "seconds": round(seconds_acdc, 1)})
    table = pd.DataFrame(rows)
    print(f"{args.run} step {loaded.step}: {len(graph.edges)} edges, {args.n_sequences} sequences")
    print(table.to_string(index=False))
    return table


if __name__ == "__main__":
    main()
