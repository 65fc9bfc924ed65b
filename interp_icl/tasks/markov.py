"""In-context n-gram Markov chains with a chosen parent set (REFERENCE §1).

For every sequence a fresh kernel is drawn: for each parent context z in [d]^|pa|,
pi(.|z) ~ Dirichlet(alpha * 1_d). The first max(pa) tokens are uniform; then
x_t ~ pi(.| x_{t-p_1}, ..., x_{t-p_k}). The model must infer pi in context.

With weak parents (`MarkovConfig.weak_parents`) a kernel depends on them only with probability
`weak_parent_prob`, else only on the strong parents; the Bayes oracle is then the exact posterior
mixture of the two (`weak_parent_posterior_probs`).

Metadata: ``kernels`` ``[batch, d^|pa|, d]`` with rows indexed by the context index
z = sum_k x_{t-p_k} d^k (parents sorted ascending).
"""

from __future__ import annotations

import torch
from torch import Tensor

from interp_icl.builtin_tasks import MarkovConfig
from interp_icl.tasks.base import Batch
from interp_icl.theory.estimators import (
    context_index,
    dirichlet_posterior_probs,
    markov_prior_kernels,
    sgram_probs,
    unigram_probs,
    weak_parent_posterior_probs,
)


class MarkovTask:
    def __init__(self, config: MarkovConfig):
        self.config = config
        self.parents: tuple[int, ...] = config.parents
        self.alpha = float(config.alpha)
        self.weak_parents: tuple[int, ...] = config.weak_parents
        self.weak_parent_prob = float(config.weak_parent_prob)

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def seq_len(self) -> int:
        return self.config.seq_len

    @property
    def n_contexts(self) -> int:
        return self.vocab_size ** len(self.parents)

    def sample_kernels(self, n: int, generator: torch.Generator) -> Tensor:
        """``[n, d^|pa|, d]`` float32 transition kernels of the prior: rows ~ Dirichlet(alpha), or
        with weak parents the mixture of `markov_prior_kernels`."""
        return markov_prior_kernels(
            n, self.vocab_size, self.parents, self.alpha, generator,
            self.weak_parents, self.weak_parent_prob,
        )

    def sample(self, n: int, generator: torch.Generator, seq_len: int | None = None) -> Batch:
        """Draw n sequences of `seq_len` tokens (default the config's); vectorised over n."""
        seq = self.seq_len if seq_len is None else seq_len
        d = self.vocab_size
        device = generator.device
        kernels = self.sample_kernels(n, generator)
        cdf = kernels.cumsum(-1).reshape(n * self.n_contexts, d)
        tokens = torch.empty(n, seq, dtype=torch.long, device=device)
        start = min(max(self.parents), seq)
        tokens[:, :start] = torch.randint(0, d, (n, start), generator=generator, device=device)
        uniforms = torch.rand(n, seq, generator=generator, device=device)
        row_base = torch.arange(n, device=device) * self.n_contexts
        for t in range(start, seq):
            z = torch.zeros(n, dtype=torch.long, device=device)
            for k, p in enumerate(self.parents):
                z += tokens[:, t - p] * d**k
            row_cdf = cdf[row_base + z]
            tokens[:, t] = (uniforms[:, t, None] > row_cdf).sum(-1).clamp_max(d - 1)
        return Batch(tokens, {"kernels": kernels})

    def true_probs(self, batch: Batch) -> Tensor:
        """The drawn kernel's law of each token given its parents; uniform for t < max(pa)."""
        z = context_index(batch.tokens, self.parents, self.vocab_size)
        kernels = batch.metadata["kernels"]
        rows = torch.gather(
            kernels, 1, z.clamp_min(0)[..., None].expand(-1, -1, self.vocab_size)
        )
        uniform = torch.full_like(rows, 1.0 / self.vocab_size)
        return torch.where((z >= 0)[..., None], rows, uniform)

    def bayes_probs(self, batch: Batch) -> Tensor:
        if self.weak_parents:
            return weak_parent_posterior_probs(
                batch.tokens, self.parents, self.weak_parents, self.vocab_size, self.alpha,
                self.weak_parent_prob,
            )
        return dirichlet_posterior_probs(batch.tokens, self.parents, self.vocab_size, self.alpha)

    def baselines(self, batch: Batch, beta: float) -> dict[str, Tensor]:
        return {
            "bayes": self.bayes_probs(batch),
            "unigram": unigram_probs(batch.tokens, self.vocab_size, beta),
            "sgram_parents": sgram_probs(batch.tokens, self.parents, self.vocab_size, beta),
        }

    def describe(self) -> dict[str, object]:
        description: dict[str, object] = {
            "task": "markov",
            "vocab_size": self.vocab_size,
            "parents": list(self.parents),
            "alpha": self.alpha,
            "seq_len": self.seq_len,
        }
        if self.weak_parents:
            description["weak_parents"] = list(self.weak_parents)
            description["weak_parent_prob"] = self.weak_parent_prob
        return description
