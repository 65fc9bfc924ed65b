"""Theory pass: the parent set the χ² selection criteria predict for a Markov task (REFERENCE §1).

Wraps `interp_icl.theory.selection.estimate_selection` as a PassResult. The candidate sets are
S ⊆ {1..W}, |S| <= D with W, D the window and degree the model's layout declares (the gih model's
M and D), or where it declares none W = max(parents) + 1 and D = min(W, 3). Kernels follow the
task's prior, weak parents included. The modified criterion is the one in the authors'
reference code (``RPE/utils.py`` ``chi_square_mutual_info``, power 2; REFERENCE §1); the summary's
``criteria`` names both.
"""

from __future__ import annotations

from torch import nn

from interp_icl.analysis.result import PassResult, make_table
from interp_icl.errors import require
from interp_icl.models import layout
from interp_icl.theory.selection import estimate_selection


def theory_window(model: nn.Module | None, parents: tuple[int, ...]) -> tuple[int, int]:
    """(W, D) of the candidate family for `model`."""
    shape = layout(model) if model is not None else None
    window = max(parents) + 1 if shape is None or shape.window is None else int(shape.window)
    if shape is not None and shape.max_degree is not None:
        return window, int(shape.max_degree)
    return window, min(window, 3)


def theory(task, model: nn.Module | None = None, n_kernels: int = 1000, seed: int = 0) -> PassResult:
    """Both criteria for every candidate set, mean ± stderr over `n_kernels` prior kernels."""
    require(hasattr(task, "parents") and hasattr(task, "sample_kernels"), "the theory pass needs a Markov task")
    window, degree = theory_window(model, tuple(task.parents))
    estimate = estimate_selection(
        task.vocab_size, task.parents, task.alpha, window, degree, n_kernels=n_kernels, seed=seed,
        weak_parents=getattr(task, "weak_parents", ()),
        weak_parent_prob=getattr(task, "weak_parent_prob", 1.0),
    )
    table = estimate.table.rename(columns={"offsets": "unit", "criterion": "metric"})
    summary = estimate.summary()
    return PassResult("theory", make_table(table.to_dict("records")), summary)
