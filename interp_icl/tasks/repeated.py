"""Repeated random tokens: a uniform random block of `block_len` tokens repeated `n_repeats` times.

The classic probe for induction heads (Olsson et al. 2022): from the second copy on, every token
is determined by the previous copy. Metadata: ``block_len`` ``[batch]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp_icl.builtin_tasks import RepeatedConfig
from interp_icl.tasks.base import Batch
from interp_icl.theory.estimators import unigram_probs


class RepeatedTokensTask:
    def __init__(self, config: RepeatedConfig):
        self.config = config
        self.block_len = config.block_len
        self.n_repeats = config.n_repeats

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        return self.block_len * self.n_repeats

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        block = torch.randint(
            0, self.vocab_size, (n, self.block_len), generator=generator, device=generator.device
        )
        tokens = block.repeat(1, self.n_repeats)
        return Batch(tokens, {"block_len": torch.full((n,), self.block_len, device=tokens.device)})

    def bayes_probs(self, batch: Batch) -> Tensor:
        """Uniform over the first block; a point mass on the copied token afterwards."""
        tokens = batch.tokens
        probs = torch.full((*tokens.shape, self.vocab_size), 1.0 / self.vocab_size, device=tokens.device)
        later = tokens[:, self.block_len :]
        probs[:, self.block_len :] = torch.nn.functional.one_hot(later, self.vocab_size).float()
        return probs

    def baselines(self, batch: Batch, beta: float) -> dict[str, Tensor]:
        return {
            "bayes": self.bayes_probs(batch),
            "unigram": unigram_probs(batch.tokens, self.vocab_size, beta),
        }

    def describe(self) -> dict[str, object]:
        return {
            "task": "repeated",
            "vocab_size": self.vocab_size,
            "block_len": self.block_len,
            "n_repeats": self.n_repeats,
            "seq_len": self.seq_len,
        }
