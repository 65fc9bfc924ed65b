"""Which parent set the gih circuit should select: χ²-mutual-information criteria (REFERENCE §1).

For a kernel π of the Markov task let μ be the stationary joint law of (x_l, x_{l-S}) — the next
token e = x_l and its context z = (x_{l-s})_{s∈S}. Two criteria per offset set S:
  * standard χ²-MI:    I(S) = Σ_z μ(z) (Σ_e μ(e|z)² / μ(e) - 1) = Σ_{z,e} μ(z,e)² / (μ(z) μ(e)) - 1;
  * modified (the criterion of the authors' reference code: gszfwsb/Unveiling-Induction-Heads,
    ``RPE/utils.py`` ``chi_square_mutual_info(joint, power)`` with power 2, as called in
    ``RPE/analyze_dataset.py``; REFERENCE §1):
                       Ĩ(S) = Σ_z μ(z)² (Σ_e μ(e|z)² / μ(e) - 1) = Σ_{z,e} μ(z,e)² / μ(e) - Σ_z μ(z)².
Both are averaged over kernels drawn from the task's prior (Monte Carlo, mean ± stderr over
kernels), for every S ⊆ {1..window} with 1 <= |S| <= max_degree. The predicted S* maximises the
mean (means equal to 9 significant digits count as equal and go to the smaller set); sets whose paired per-kernel difference from S* is within 2 stderr of 0 are reported as tied.

Stationary law: the chain on states (x_{l-1}, ..., x_{l-K}), K = max(window, max parent), is made
lazy ((I + P) / 2, same stationary law, aperiodic) and squared repeatedly in float64 (rows
renormalised after each squaring) until it stops changing, at most 2^64 steps.

Kernels come from `markov_prior_kernels` (weak parents included); `selection_grid` compares the
two criteria's S* over a list of settings.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor

from interp_icl.errors import require
from interp_icl.theory.estimators import markov_prior_kernels
from interp_icl.seeding import seeded

CRITERIA = ("chi2_mi", "modified_chi2_mi")
CRITERION_LABELS = {
    "chi2_mi": "standard χ²-mutual information",
    "modified_chi2_mi": "modified χ²-mutual information (authors' reference code: RPE/utils.py chi_square_mutual_info, power 2)",
}
MAX_STATES = 4096
SQUARINGS = 64


def window_subsets(window: int, max_degree: int) -> list[tuple[int, ...]]:
    """Every S ⊆ {1..window} with 1 <= |S| <= max_degree, by size then lexicographic."""
    return [s for k in range(1, max_degree + 1) for s in itertools.combinations(range(1, window + 1), k)]


def stationary_joint(kernels: Tensor, parents: tuple[int, ...], vocab_size: int, n_lags: int) -> Tensor:
    """Stationary joint law of (x_l, x_{l-1}, ..., x_{l-K}), ``[n, d, d, ..., d]`` (K + 1 token axes:
    axis 1 is x_l, axis 1 + j is x_{l-j}), float64, for kernels ``[n, d^|pa|, d]``."""
    d, k_lags = vocab_size, n_lags
    require(k_lags >= max(parents), f"need at least {max(parents)} lags, got {k_lags}")
    n_states = d**k_lags
    require(n_states <= MAX_STATES, f"vocab_size^{k_lags} = {n_states} states is too many (at most {MAX_STATES})")
    n = kernels.shape[0]
    states = torch.arange(n_states)
    digits = torch.stack([(states // d**j) % d for j in range(k_lags)], dim=1)  # [S, K]: x_{l-1-j}
    z = sum(digits[:, p - 1] * d**k for k, p in enumerate(sorted(parents)))  # [S]
    kernels = kernels.double()
    kernels = kernels / kernels.sum(-1, keepdim=True)  # float32 rows sum to 1 only within ~1e-7
    next_probs = kernels[:, z]  # [n, S, d]: π(e | state)
    successor = (torch.arange(d)[None, :] + d * (states[:, None] % d ** (k_lags - 1)))  # [S, d]
    transition = torch.zeros(n, n_states, n_states, dtype=torch.float64)
    transition.scatter_add_(2, successor[None].expand(n, -1, -1), next_probs)
    lazy = 0.5 * (transition + torch.eye(n_states, dtype=torch.float64))
    for _ in range(SQUARINGS):
        squared = lazy @ lazy
        squared = squared / squared.sum(-1, keepdim=True)
        converged = float((squared - lazy).abs().max()) < 1e-14
        lazy = squared
        if converged:
            break
    mu = lazy.mean(1)  # [n, S]: rows of P^∞ agree for an irreducible chain; average any residue
    mu = mu / mu.sum(-1, keepdim=True)
    joint = mu[:, :, None] * next_probs  # [n, S, e]
    # state index s = Σ_j x_{l-1-j} d^j -> axes (x_{l-K}, ..., x_{l-1}); put e first then x_{l-1}..x_{l-K}
    joint = joint.permute(0, 2, 1).reshape(n, d, *([d] * k_lags))
    return joint.permute(0, 1, *range(k_lags + 1, 1, -1))


def criteria_for_joint(joint: Tensor, offsets: tuple[int, ...]) -> dict[str, Tensor]:
    """Both criteria ``{name: [n]}`` for offset set S from a joint of `stationary_joint`."""
    n_lags = joint.ndim - 2
    drop = [1 + j for j in range(1, n_lags + 1) if j not in offsets]
    marginal = joint.sum(dim=drop) if drop else joint
    marginal = marginal.reshape(joint.shape[0], joint.shape[1], -1)  # [n, e, z]
    mu_e = marginal.sum(2, keepdim=True)
    mu_z = marginal.sum(1, keepdim=True)
    sq = marginal**2
    chi2 = torch.where(sq > 0, sq / (mu_e * mu_z).clamp_min(1e-300), torch.zeros_like(sq)).sum((1, 2)) - 1.0
    modified = torch.where(sq > 0, sq / mu_e.clamp_min(1e-300), torch.zeros_like(sq)).sum((1, 2)) - (mu_z**2).sum((1, 2))
    return {"chi2_mi": chi2, "modified_chi2_mi": modified}


@dataclass
class SelectionEstimate:
    """Monte Carlo estimates of both criteria for every candidate set.

    table: one row per (offset set, criterion): offsets, size, criterion, mean, stderr, n.
    predicted: {criterion: S*}; tied_with_best: {criterion: sets within 2 paired stderr of S*}.
    """

    table: pd.DataFrame
    predicted: dict[str, tuple[int, ...]]
    tied_with_best: dict[str, list[tuple[int, ...]]]
    settings: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "predicted": {c: list(s) for c, s in self.predicted.items()},
            "tied_with_best": {c: [list(s) for s in sets] for c, sets in self.tied_with_best.items()},
            "criteria": CRITERION_LABELS,
            **self.settings,
        }


def estimate_selection(
    vocab_size: int,
    parents: Sequence[int],
    alpha: float,
    window: int,
    max_degree: int,
    n_kernels: int = 2000,
    seed: int = 0,
    chunk: int = 500,
    weak_parents: Sequence[int] = (),
    weak_parent_prob: float = 1.0,
) -> SelectionEstimate:
    """Estimate both criteria over `n_kernels` kernels of the Markov prior (d = `vocab_size`,
    parent offsets `parents`, Dirichlet(`alpha`) rows; `weak_parents` used with probability
    `weak_parent_prob`, `markov_prior_kernels`) drawn with `seed`."""
    require(window >= 1 and max_degree >= 1, f"window and max_degree must be >= 1, got {window}, {max_degree}")
    require(n_kernels >= 2, f"n_kernels must be >= 2, got {n_kernels}")
    parents, weak_parents = tuple(parents), tuple(sorted(weak_parents))
    subsets = window_subsets(window, max_degree)
    n_lags = max(window, max(parents))
    generator = seeded(seed)
    values: dict[tuple[str, tuple[int, ...]], list[Tensor]] = {(c, s): [] for c in CRITERIA for s in subsets}
    n_states = vocab_size**n_lags
    chunk = max(1, min(chunk, 4_000_000 // n_states**2))  # transition matrices of a chunk <= ~100 MB
    for start in range(0, n_kernels, chunk):
        kernels = markov_prior_kernels(
            min(chunk, n_kernels - start), vocab_size, parents, alpha, generator, weak_parents, weak_parent_prob
        )
        joint = stationary_joint(kernels, parents, vocab_size, n_lags)
        for s in subsets:
            for c, v in criteria_for_joint(joint, s).items():
                values[(c, s)].append(v)
    per_kernel = {key: torch.cat(v) for key, v in values.items()}

    rows, predicted, tied = [], {}, {}
    for c in CRITERIA:
        means = {s: float(per_kernel[(c, s)].mean()) for s in subsets}
        # exact ties (a superset of the parents carries the same information) go to the smaller set
        scale = max(abs(m) for m in means.values()) or 1.0
        best = max(subsets, key=lambda s: (round(means[s] / scale, 9), -len(s)))
        predicted[c] = best
        tied[c] = []
        for s in subsets:
            v = per_kernel[(c, s)]
            diff = per_kernel[(c, best)] - v
            diff_se = float(diff.std() / math.sqrt(len(diff)))
            if s == best or float(diff.mean()) <= 2 * diff_se + 1e-12:
                tied[c].append(s)
            rows.append({
                "offsets": _label(s),
                "size": len(s),
                "criterion": c,
                "mean": means[s],
                "stderr": float(v.std() / math.sqrt(len(v))),
                "n": len(v),
                "gap_to_best": float(diff.mean()),
                "gap_stderr": diff_se,
            })
    settings = {
        "vocab_size": vocab_size,
        "parents": list(parents),
        "alpha": alpha,
        "window": window,
        "max_degree": max_degree,
        "n_kernels": n_kernels,
        "seed": seed,
    }
    if weak_parents:
        settings["weak_parents"] = list(weak_parents)
        settings["weak_parent_prob"] = weak_parent_prob
    return SelectionEstimate(pd.DataFrame(rows), predicted, tied, settings)


def selection_grid(settings: list[dict], n_kernels: int = 2000, seed: int = 0) -> pd.DataFrame:
    """`estimate_selection` for every setting (a dict of its keyword arguments: vocab_size,
    parents, alpha, window, max_degree and optionally weak_parents, weak_parent_prob), each with
    `n_kernels` kernels drawn with `seed`.

    One row per setting: the setting's values (offset sets as strings like "{1,2}"), then per
    criterion c: c_best (S*), c_mean and c_stderr (of S*), c_runner_up (the best other set),
    c_gap and c_gap_stderr (paired per-kernel mean of S* minus runner-up, and its stderr);
    and agree (both criteria predict the same S*).
    """
    rows = []
    for setting in settings:
        estimate = estimate_selection(**setting, n_kernels=n_kernels, seed=seed)
        row = {k: _label(v) if isinstance(v, (tuple, list)) else v for k, v in setting.items()}
        for c in CRITERIA:
            table = estimate.table[estimate.table["criterion"] == c]
            best_label = _label(estimate.predicted[c])
            best = table[table["offsets"] == best_label].iloc[0]
            others = table[table["offsets"] != best_label]
            runner = others.loc[others["mean"].idxmax()]
            row.update({
                f"{c}_best": best_label,
                f"{c}_mean": best["mean"],
                f"{c}_stderr": best["stderr"],
                f"{c}_runner_up": runner["offsets"],
                f"{c}_gap": runner["gap_to_best"],
                f"{c}_gap_stderr": runner["gap_stderr"],
            })
        row["agree"] = estimate.predicted["chi2_mi"] == estimate.predicted["modified_chi2_mi"]
        rows.append(row)
    return pd.DataFrame(rows)


def _label(offsets: Sequence[int]) -> str:
    return "{" + ",".join(map(str, offsets)) + "}"
