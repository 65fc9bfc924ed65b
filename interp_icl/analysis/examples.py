"""Which sample sequences show the circuit best: the ones that exercise it most.

A two-layer ICL circuit has something to show on a sequence only if the sequence visits many
different parent contexts (each a separate in-context count that layer 2 must look up) and its
next tokens vary within a context. On the default task (Dirichlet 0.1 rows) many sequences are a
single repeated token or a short cycle: one or two contexts, nothing to see.

`circuit_exercise(tokens, parents)` scores every sequence ``[B, T]`` by
  1. the number of distinct parent contexts (x_{t-p} for p in parents) among targets t >= max(pa);
  2. then the number of (context, next token) pairs seen, i.e. how much the next token varies
     within contexts;
and `exercising_sequences` returns the indices of the `n` highest-scoring sequences (ties to the
lower index). Without parents (e.g. repeated random tokens) the score is the number of distinct
tokens, then of distinct bigrams.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def circuit_exercise(tokens: Tensor, parents: Sequence[int] | None) -> Tensor:
    """``[B, 2]`` int64 scores (distinct contexts, distinct (context, next token) pairs)."""
    tokens = tokens.long()
    offsets = tuple(parents) if parents else (1,)
    start = max(offsets)
    vocab = int(tokens.max()) + 1 if tokens.numel() else 1
    context = torch.zeros_like(tokens[:, start:])
    for p in offsets:
        context = context * vocab + tokens[:, start - p : tokens.shape[1] - p]
    if not parents:  # no parent structure: distinct tokens, then distinct bigrams
        context = tokens[:, start:]
    pairs = context * vocab + tokens[:, start:]
    distinct = lambda x: torch.tensor([len(torch.unique(row)) for row in x])  # noqa: E731
    return torch.stack([distinct(context), distinct(pairs)], dim=1)


def exercising_sequences(tokens: Tensor, parents: Sequence[int] | None, n: int) -> list[int]:
    """Indices of the `n` sequences of ``tokens [B, T]`` that exercise the circuit most."""
    scores = circuit_exercise(tokens, parents).tolist()
    order = sorted(range(len(scores)), key=lambda i: (-scores[i][0], -scores[i][1], i))
    return order[:n]
