"""Edge scores on a model of the quickstart preset's size (issue 22's speed targets).

    python benchmarks/circuits.py [--threads 2] [--sequences 256]

A standard model with the quickstart preset's shape (2 layers, 4 heads of 16, d_model 64, MLP 256;
random weights: the cost does not depend on them), vocabulary 3, 101 tokens, resample source,
metric the mean target NLL. Times one call each (after a warm-up call on 8 sequences) of exact
edge patching of every edge, EAP and EAP-IG with 16 steps. Targets: exact <= 30 s, EAP-IG (16)
<= 5 s on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from interp_icl.circuits import eap_scores, exact_scores, standard_graph
from interp_icl.models import build_model
from interp_icl.patching.interventions import sequence_nll
from interp_icl.presets import PRESETS


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--sequences", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = PRESETS["quickstart"]()
    model = build_model(config.model, 3, 101, 0).eval()
    shape = config.model.model_dump()
    tokens = torch.randint(0, 3, (args.sequences, 101), generator=torch.Generator().manual_seed(0))
    source = tokens.roll(1, 0)
    graph = standard_graph(model)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, 3)

    calls = {
        "exact, every edge": lambda t, s: exact_scores(model, graph, t, s, metric),
        "EAP": lambda t, s: eap_scores(model, graph, t, s, metric),
        "EAP-IG, 16 steps": lambda t, s: eap_scores(model, graph, t, s, metric, ig_steps=16),
    }
    results = {"model": shape, "edges": len(graph.edges), "sequences": args.sequences, "threads": args.threads,
               "torch": torch.__version__, "python": platform.python_version(), "seconds": {}}
    for name, call in calls.items():
        call(tokens[:8], source[:8])
        start = time.perf_counter()
        call(tokens, source)
        results["seconds"][name] = round(time.perf_counter() - start, 2)
        print(f"{name}: {results['seconds'][name]} s")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
