"""A patching sweep on a model with inputs drawn from its task, as `interp-icl patch` runs it.

Inputs come from the task (seeded): clean sequences, and corrupted ones made by

- ``parents``: the tokens at the parent positions of the last token are changed (each to a
  different token drawn uniformly), so the in-context evidence for the last prediction changes
  while everything else stays; pair it with a ``last-*`` metric;
- ``resample``: fresh, independent sequences from the task.

Metrics, always against the clean sequence: ``loss`` (mean NLL of the clean tokens over every
prediction row), ``last-loss`` (NLL of the clean last token), ``kl`` / ``last-kl`` (KL from the
clean run's prediction, every row / the last row). Denoising patches clean activations into the
corrupted run; noising the reverse; ``ablate`` replaces activations by zero/mean/resampled ones in
the clean run instead.
Run directories are handled by `interp_icl.runs`; the role experiments live in `interp_icl.roles`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from interp_icl.errors import require
from interp_icl.patching.attribution import attribution_patching, compare_with_exact
from interp_icl.patching.metrics import Metric, kl_to, prediction_rows, target_loss
from interp_icl.patching.result import PatchResult
from interp_icl.patching.sources import ABLATIONS
from interp_icl.patching.sweep import DEFAULT_MEMORY_MB, MODES, ablation, activation_patching
from interp_icl.patching.targets import Target
from interp_icl.tasks import is_continuous
from interp_icl.seeding import derive_seed, seeded

CORRUPTIONS = ("parents", "resample")
METRICS = ("loss", "last-loss", "kl", "last-kl")


@dataclass(frozen=True)
class PatchSettings:
    site: str = "z"
    by: str = "pos"
    metric: str = "last-loss"
    corrupt: str = "parents"
    mode: str = "denoise"
    ablate: str | None = None
    n_sequences: int = 64
    seed: int = 0
    memory_mb: float = DEFAULT_MEMORY_MB
    attribution: bool = True
    layers: tuple[int, ...] | None = None  # None: every layer

    def __post_init__(self) -> None:
        require(
            self.metric in METRICS,
            f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}",
        )
        require(
            self.corrupt in CORRUPTIONS,
            f"unknown corruption {self.corrupt!r}; choose one of {', '.join(CORRUPTIONS)}",
        )
        require(
            self.mode in MODES, f"unknown patching mode {self.mode!r}; choose 'denoise' or 'noise'"
        )
        require(
            self.ablate is None or self.ablate in ABLATIONS,
            f"unknown ablation {self.ablate!r}; choose one of {', '.join(ABLATIONS)}",
        )
        require(self.n_sequences >= 1, f"--n-sequences must be at least 1, got {self.n_sequences}")
        require(self.memory_mb > 0, f"--memory-mb must be positive, got {self.memory_mb}")
        self.target()  # validates site and granularity

    def target(self) -> Target:
        return Target(self.site, self.by, self.layers)


def parent_corruption(task, clean: Tensor, generator: torch.Generator) -> Tensor:
    """`clean` with the tokens at the last token's parent positions changed to other tokens."""
    require(getattr(task.config, "name", None) == "markov", "--corrupt parents needs a Markov task")
    corrupted = clean.clone()
    seq_len, vocab = clean.shape[1], task.vocab_size
    for parent in task.config.parents:
        pos = seq_len - 1 - parent
        shift = torch.randint(1, vocab, (clean.shape[0],), generator=generator)
        corrupted[:, pos] = (clean[:, pos] + shift) % vocab
    return corrupted


def make_metric(model: nn.Module, name: str, clean: Tensor) -> Metric:
    last = (prediction_rows(model, clean.shape[1])[-1],)
    if name in ("loss", "last-loss"):
        return target_loss(model, clean, None if name == "loss" else last)
    with torch.no_grad():
        clean_output = model(clean)
    return kl_to(model, clean_output, None if name == "kl" else last)


def patch_experiment(
    model: nn.Module, task, settings: PatchSettings, progress: bool = False
) -> tuple[PatchResult, dict | None]:
    """(the sweep's result, `compare_with_exact` of its attribution estimate or None) on
    `settings.n_sequences` sequences of `task` seeded by `settings.seed`."""
    require(
        not is_continuous(task),
        f"patching sweeps need a token task; this run's task is {task.config.name!r}",
    )
    generator = seeded(derive_seed(settings.seed, "patching"))
    clean = task.sample(settings.n_sequences, generator).tokens
    metric = make_metric(model, settings.metric, clean)
    target = settings.target()
    options = {"memory_mb": settings.memory_mb, "progress": progress}
    comparison = None
    if settings.ablate is not None:
        return ablation(model, clean, target, metric, kind=settings.ablate, **options), None
    if settings.corrupt == "parents":
        corrupted = parent_corruption(task, clean, generator)
    else:
        corrupted = task.sample(settings.n_sequences, generator).tokens
    result = activation_patching(model, clean, corrupted, target, metric, mode=settings.mode, **options)
    if settings.attribution:
        estimate = attribution_patching(model, clean, corrupted, target, metric, mode=settings.mode)
        comparison = compare_with_exact(estimate, result)
    return result, comparison
