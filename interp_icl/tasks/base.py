"""What every task provides: a seeded sampler, oracle predictors and metadata.

Probability arrays are *target-aligned*: ``probs[b, t, k]`` is a predictor's law of token t of
sequence b given tokens 0..t-1, shape ``[batch, seq, vocab]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor

from interp_icl.registry import TaskConfigBase


@dataclass
class Batch:
    """Sequences of one task.

    tokens: ``[batch, seq]`` int64 token ids in [0, vocab_size); for continuous tasks
      (regression) ``[batch, seq, features]`` float vectors.
    metadata: task-specific tensors with a leading batch dimension (e.g. the Markov kernels).
    """

    tokens: Tensor
    metadata: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def __getitem__(self, index: slice | Tensor) -> "Batch":
        return Batch(self.tokens[index], {k: v[index] for k, v in self.metadata.items()})

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.tokens.to(device), {k: v.to(device) for k, v in self.metadata.items()})


class Task(Protocol):
    config: TaskConfigBase

    @property
    def vocab_size(self) -> int: ...

    @property
    def seq_len(self) -> int: ...

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """Draw n sequences; all randomness comes from `generator`."""
        ...

    def bayes_probs(self, batch: Batch) -> Tensor:
        """The Bayes-optimal predictor, target-aligned ``[batch, seq, vocab]``."""
        ...

    def baselines(self, batch: Batch, beta: float) -> dict[str, Tensor]:
        """Named reference predictors (always including "bayes" and "unigram")."""
        ...

    def describe(self) -> dict[str, object]:
        """JSON-able metadata a report shows about the task."""
        ...
