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
tokens, then of distinct bigrams. `attention_examples(model, task, seed)` draws a pool of
sequences, picks the most exercising ones and returns their attention patterns on every layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp_icl.analysis.common import hook_cache
from interp_icl.seeding import generator

POOL = 64  # sequences drawn to pick the examples from


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


@dataclass
class AttentionExample:
    """One picked sequence: its index in the pool, tokens ``[T]``, its scores (distinct
    contexts, distinct (context, next token) pairs) and every layer's pattern ``[H, T, T]``."""

    index: int
    tokens: Tensor
    contexts: int
    pairs: int
    patterns: list[Tensor]


def attention_examples(model: nn.Module, task, seed: int, n: int = 2, pool: int = POOL) -> list[AttentionExample]:
    """The `n` of `pool` sequences of `task` (drawn from `seed`, stream "report/attention") that
    exercise the circuit most, with the model's attention patterns on them."""
    tokens = task.sample(pool, generator(seed, "report", "attention")).tokens
    parents = getattr(task, "parents", None)
    scores = circuit_exercise(tokens, parents)
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(int(model.cfg.n_layers))]
    examples = []
    for i in exercising_sequences(tokens, parents, n):
        with torch.no_grad():
            cache = hook_cache(model, tokens[i : i + 1], names)
        patterns = [cache[name][0] for name in names]
        examples.append(AttentionExample(i, tokens[i], int(scores[i, 0]), int(scores[i, 1]), patterns))
    return examples
