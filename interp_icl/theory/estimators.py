"""In-context counting estimators: the Bayes predictor of the Markov task and S-gram estimators.

All functions take integer tokens ``[batch, seq]`` and return *target-aligned* next-token
probabilities ``[batch, seq, vocab]``: row ``t`` is the estimator's law of token ``t`` given
tokens ``0..t-1`` only.

For an offset set S = (s_1 < ... < s_k) the context of position t is the tuple
(x_{t-s_1}, ..., x_{t-s_k}), defined for t >= max(S); S = () has one empty context everywhere.
N_S(z, k) counts earlier positions l < t with context z and token k.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from interp_icl.errors import require


def context_index(tokens: Tensor, offsets: Sequence[int], vocab_size: int) -> Tensor:
    """Index of each position's context under `offsets`, as an integer in [0, d^|S|).

    Returns ``[batch, seq]`` long; -1 where the context is undefined (t < max(offsets)).
    Offsets are read in sorted order: z = sum_k x_{t - s_k} * d^k.
    """
    seq = tokens.shape[1]
    index = torch.zeros_like(tokens)
    defined = torch.ones_like(tokens, dtype=torch.bool)
    for k, s in enumerate(sorted(offsets)):
        shifted = torch.zeros_like(tokens)
        shifted[:, s:] = tokens[:, : max(seq - s, 0)]
        defined[:, : min(s, seq)] = False
        index += shifted * vocab_size**k
    return torch.where(defined, index, torch.full_like(index, -1))


def context_counts(
    tokens: Tensor, offsets: Sequence[int], vocab_size: int, start: int = 0
) -> tuple[Tensor, Tensor]:
    """Counts of the current context's continuations among earlier positions.

    Returns ``(counts, defined)``: counts ``[batch, seq, vocab]`` float with
    counts[b, t, k] = N_S(z_t, k) over positions l < t, and defined ``[batch, seq]`` bool,
    False where z_t is undefined (t < max(S), or t < `start`; counts are 0 there). Positions
    before `start` are neither counted nor given counts.
    """
    batch, seq = tokens.shape
    d = vocab_size
    z = context_index(tokens, offsets, d)
    if start > 0:
        z[:, : min(start, seq)] = -1
    n_contexts = d ** len(offsets)
    table = torch.zeros(batch, n_contexts * d, dtype=torch.float64, device=tokens.device)
    counts = torch.zeros(batch, seq, d, dtype=torch.float64, device=tokens.device)
    vocab = torch.arange(d, device=tokens.device)
    for t in range(seq):
        zt = z[:, t]
        ok = zt >= 0
        zt_safe = zt.clamp_min(0)
        counts[:, t] = torch.gather(table, 1, zt_safe[:, None] * d + vocab) * ok[:, None]
        table.scatter_add_(1, (zt_safe * d + tokens[:, t])[:, None], ok[:, None].to(table.dtype))
    return counts, z >= 0


def dirichlet_kernels(
    n: int, n_contexts: int, vocab_size: int, alpha: float, generator: torch.Generator
) -> Tensor:
    """``[n, n_contexts, vocab_size]`` float32 transition kernels: every row an independent
    Dirichlet(alpha * 1) draw (the Markov task's prior; REFERENCE §1)."""
    device = generator.device
    concentration = torch.full((n, n_contexts, vocab_size), alpha, dtype=torch.float64, device=device)
    gammas = torch._standard_gamma(concentration, generator=generator)
    # float64 gammas underflow to 0 only with probability ~1e-30 at alpha = 0.1; guard anyway.
    total = gammas.sum(-1, keepdim=True)
    kernels = torch.where(total > 0, gammas / total.clamp_min(1e-300), 1.0 / vocab_size)
    return kernels.to(torch.float32)


def markov_prior_kernels(
    n: int,
    vocab_size: int,
    parents: Sequence[int],
    alpha: float,
    generator: torch.Generator,
    weak_parents: Sequence[int] = (),
    weak_parent_prob: float = 1.0,
) -> Tensor:
    """``[n, d^|pa|, d]`` float32 kernels of the Markov task's prior, rows indexed by the context
    index z = sum_k x_{t-p_k} d^k over the sorted parents (the task's sampler and the theory's).

    Without weak parents every row is an independent Dirichlet(alpha) draw (exactly
    `dirichlet_kernels`, nothing else is drawn). With weak parents W (a strict subset of the
    parents) a kernel is, with probability `weak_parent_prob`, such a kernel over all parents;
    otherwise a Dirichlet(alpha) kernel over the strong parents (pa minus W), expanded to every parent
    context (its rows do not depend on the weak parents' values). Draw order: the all-parent
    kernels, the strong-parent kernels, then one uniform per kernel for the choice.
    """
    parents = tuple(sorted(parents))
    weak = tuple(sorted(weak_parents))
    d = vocab_size
    require(0.0 <= weak_parent_prob <= 1.0, f"weak_parent_prob must be in [0, 1], got {weak_parent_prob}")
    if not weak:
        require(weak_parent_prob == 1.0, f"weak_parent_prob {weak_parent_prob} needs weak_parents")
        return dirichlet_kernels(n, d ** len(parents), d, alpha, generator)
    strong = strong_parents(parents, weak)
    full = dirichlet_kernels(n, d ** len(parents), d, alpha, generator)  # [n, d^|pa|, d]
    reduced = dirichlet_kernels(n, d ** len(strong), d, alpha, generator)  # [n, d^|strong|, d]
    uses_weak = torch.rand(n, generator=generator, device=generator.device) < weak_parent_prob
    expanded = reduced[:, strong_context_map(parents, strong, d).to(reduced.device)]  # [n, d^|pa|, d]
    return torch.where(uses_weak[:, None, None], full, expanded)


def strong_parents(parents: Sequence[int], weak_parents: Sequence[int]) -> tuple[int, ...]:
    """The sorted parents that are not weak; weak parents must be a strict subset of parents."""
    parents, weak = tuple(sorted(parents)), tuple(sorted(weak_parents))
    require(
        set(weak) <= set(parents),
        f"weak parents {list(weak)} must be among the parents {list(parents)}",
    )
    strong = tuple(p for p in parents if p not in weak)
    require(len(strong) > 0, f"weak parents {list(weak)} must leave at least one parent strong")
    return strong


def strong_context_map(parents: Sequence[int], strong: Sequence[int], vocab_size: int) -> Tensor:
    """``[d^|pa|]`` long: the strong-parent context index of every all-parent context index."""
    parents, d = tuple(sorted(parents)), vocab_size
    z = torch.arange(d ** len(parents))
    index = torch.zeros_like(z)
    for j, s in enumerate(sorted(strong)):
        k = parents.index(s)
        index += (z // d**k) % d * d**j
    return index


def unigram_probs(tokens: Tensor, vocab_size: int, beta: float = 0.0) -> Tensor:
    """In-context unigram: (N(k) + beta) / (t + d*beta); uniform at t = 0 when beta = 0."""
    counts, _ = context_counts(tokens, (), vocab_size)
    return _normalise(counts, beta)


def sgram_probs(tokens: Tensor, offsets: Sequence[int], vocab_size: int, beta: float = 0.0) -> Tensor:
    """In-context S-gram estimator (N_S(z,k) + beta) / (N_S(z) + d*beta).

    Fallback: where the context is undefined (t < max(S)) or was never seen before
    (N_S(z) = 0), the in-context unigram estimate with the same beta is used instead.
    S = () is the unigram itself. With beta = 0 probabilities can be exactly 0 (infinite loss).
    """
    require(beta >= 0, f"beta must be >= 0, got {beta}")
    if len(offsets) == 0:
        return unigram_probs(tokens, vocab_size, beta)
    counts, defined = context_counts(tokens, offsets, vocab_size)
    seen = defined & (counts.sum(-1) > 0)
    probs = _normalise(counts, beta)
    fallback = unigram_probs(tokens, vocab_size, beta)
    return torch.where(seen[..., None], probs, fallback)


def dirichlet_posterior_probs(
    tokens: Tensor, parents: Sequence[int], vocab_size: int, alpha: float
) -> Tensor:
    """Bayes-optimal next-token law of the in-context Markov task with Dirichlet(alpha) rows.

    p*(k) = (N_pa(z,k) + alpha) / (N_pa(z) + d*alpha) for t >= max(pa); uniform before, where
    tokens are drawn uniformly.
    """
    counts, defined = context_counts(tokens, parents, vocab_size)
    probs = _normalise(counts, alpha)
    uniform = torch.full_like(probs, 1.0 / vocab_size)
    return torch.where(defined[..., None], probs, uniform)


def weak_parent_posterior_probs(
    tokens: Tensor,
    parents: Sequence[int],
    weak_parents: Sequence[int],
    vocab_size: int,
    alpha: float,
    weak_parent_prob: float,
) -> Tensor:
    """Bayes-optimal next-token law ``[batch, seq, vocab]`` (float32) under the weak-parent prior
    of `markov_prior_kernels`: a mixture of two components m, all parents (prior q =
    `weak_parent_prob`) and the strong parents only (1 - q).

    Tokens before P = max(parents) are uniform under both components. For t >= P component m
    predicts with its Dirichlet posterior p_m(t) = (N_m(z,k) + alpha) / (N_m(z) + d alpha), counting
    only positions P <= l < t (earlier tokens were drawn uniformly, not from the kernel). The
    posterior weight of m is w_m(t) ∝ q_m prod_{P <= l < t} p_m(l)(x_l) (chain rule of the
    marginal likelihood) and the prediction is sum_m w_m(t) p_m(t); computed in float64, log space.
    """
    parents = tuple(sorted(parents))
    start = max(parents)
    components = [(parents, weak_parent_prob), (strong_parents(parents, weak_parents), 1.0 - weak_parent_prob)]
    log_weights, predictions = [], []
    for offsets, prior in components:
        counts, defined = context_counts(tokens, offsets, vocab_size, start=start)
        probs = (counts + alpha) / (counts.sum(-1, keepdim=True) + vocab_size * alpha)  # float64
        probs = torch.where(defined[..., None], probs, torch.full_like(probs, 1.0 / vocab_size))
        log_seen = torch.log(torch.gather(probs, -1, tokens[..., None])[..., 0])  # [batch, seq]
        log_seen = torch.where(defined, log_seen, torch.zeros_like(log_seen))
        # log marginal likelihood of x_P..x_{t-1}: exclusive cumulative sum
        log_lik = torch.cumsum(log_seen, 1) - log_seen
        log_prior = math.log(prior) if prior > 0 else -math.inf
        log_weights.append(log_lik + log_prior)
        predictions.append(probs)
    weights = torch.softmax(torch.stack(log_weights), 0)  # [2, batch, seq]
    mixture = (weights[..., None] * torch.stack(predictions)).sum(0)
    return mixture.to(torch.float32)


def _normalise(counts: Tensor, beta: float) -> Tensor:
    d = counts.shape[-1]
    num = counts + beta
    den = num.sum(-1, keepdim=True)
    uniform = torch.full_like(num, 1.0 / d)
    return torch.where(den > 0, num / den.clamp_min(1e-300), uniform).to(torch.float32)


def mean_nll(probs: Tensor, tokens: Tensor, positions: Tensor | slice | None = None) -> float:
    """Mean of -log probs[b, t, tokens[b, t]] over sequences and the given target positions.

    `positions` selects target positions (default: all t >= 1, every target with context).
    Returns +inf if any selected target has probability 0.
    """
    if positions is None:
        positions = slice(1, None)
    p = torch.gather(probs, -1, tokens[..., None])[..., 0][:, positions]
    return float(-torch.log(p.double()).mean())
