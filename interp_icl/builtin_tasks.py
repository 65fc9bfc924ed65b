"""Config types of the built-in tasks, registered by name (torch-free: the samplers and oracles
live in ``interp_icl.tasks.<name>`` and are imported when a task is made).

Every field's bounds are pydantic constraints (they appear in `interp_icl.config.config_schema`);
rules that tie fields together are model validators raising one-line `ConfigError`s.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from interp_icl.errors import require
from interp_icl.registry import TaskConfigBase, register_task

MAX_PARENT_CONTEXTS = 1_000_000  # vocab_size ** len(parents) above this is refused


def _distinct_sorted(offsets: tuple[int, ...], field: str) -> tuple[int, ...]:
    """`offsets` sorted; a one-line error naming `field` if any offset repeats."""
    duplicates = sorted({p for p in offsets if offsets.count(p) > 1})
    require(
        not duplicates,
        f"{field} has duplicate offset(s) {', '.join(map(str, duplicates))}; give each offset once",
    )
    return tuple(sorted(offsets))


class MarkovConfig(TaskConfigBase):
    """In-context n-gram Markov chain: each sequence draws a fresh kernel
    pi(.|z) ~ Dirichlet(alpha * 1_d) for every parent context z; the first max(parents) tokens are
    uniform, then x_t ~ pi(.| x_{t-p} for p in parents).

    vocab_size: d, tokens are ids in [0, d). parents: distinct offsets >= 1, kept sorted.
    alpha: Dirichlet concentration of a kernel row. seq_len: tokens per sequence, target included
    (the paper setting with 100 context tokens is 101).

    weak_parents: a strict subset of `parents` (kept sorted; default none). With weak parents a
    sequence's kernel depends on them only with probability `weak_parent_prob`; otherwise it is a
    Dirichlet(alpha) kernel over the other ("strong") parents, whose rows do not depend on the weak
    parents' values (the prior is then a mixture, not exchangeable over contexts;
    `interp_icl.theory.estimators.markov_prior_kernels`). Without weak parents nothing extra is
    drawn and `weak_parent_prob` must stay 1."""

    name: Literal["markov"] = "markov"
    vocab_size: int = Field(3, ge=2)
    parents: tuple[int, ...] = (1, 2)
    alpha: float = Field(0.1, gt=0)
    seq_len: int = Field(101, ge=2)
    weak_parents: tuple[int, ...] = ()
    weak_parent_prob: float = Field(1.0, ge=0, le=1)

    @field_validator("weak_parents")
    @classmethod
    def _weak_parents(cls, weak: tuple[int, ...]) -> tuple[int, ...]:
        return _distinct_sorted(weak, "task.weak_parents")

    @field_validator("parents")
    @classmethod
    def _parents(cls, parents: tuple[int, ...]) -> tuple[int, ...]:
        require(len(parents) > 0, "task.parents is empty; give at least one offset, e.g. [1]")
        require(
            all(p >= 1 for p in parents),
            f"task.parents must be positive integer offsets, got {list(parents)}",
        )
        return _distinct_sorted(parents, "task.parents")

    @model_validator(mode="after")
    def _fits(self) -> MarkovConfig:
        require(
            self.seq_len > max(self.parents),
            f"task.seq_len ({self.seq_len}) must exceed the largest parent offset "
            f"({max(self.parents)})",
        )
        require(
            self.vocab_size ** len(self.parents) <= MAX_PARENT_CONTEXTS,
            f"task has {self.vocab_size}^{len(self.parents)} parent contexts; keep it <= 1e6",
        )
        outside = [p for p in self.weak_parents if p not in self.parents]
        require(
            not outside,
            f"task.weak_parents {outside} are not among task.parents {list(self.parents)}",
        )
        require(
            len(self.weak_parents) < len(self.parents),
            f"task.weak_parents {list(self.weak_parents)} are all of task.parents; leave at least "
            "one parent strong",
        )
        require(
            bool(self.weak_parents) or self.weak_parent_prob == 1.0,
            f"task.weak_parent_prob ({self.weak_parent_prob}) needs task.weak_parents; set them or "
            "leave the probability at 1",
        )
        return self


class RepeatedConfig(TaskConfigBase):
    """A uniformly random block of `block_len` tokens (ids in [0, vocab_size)) repeated
    `n_repeats` times; seq_len = block_len * n_repeats."""

    name: Literal["repeated"] = "repeated"
    vocab_size: int = Field(3, ge=2)
    block_len: int = Field(50, ge=1)
    n_repeats: int = Field(2, ge=1)

    @property
    def seq_len(self) -> int:
        return self.block_len * self.n_repeats


class RegressionConfig(TaskConfigBase):
    """In-context linear regression (von Oswald et al. 2023): `n_points` pairs
    (x_i, <w, x_i> + noise) then a query x_q, w ~ N(0, I), noise ~ N(0, noise^2); x (context and
    query) ~ U(-x_scale, x_scale)^x_dim when `x_dist` is "uniform" (the default) or
    N(0, x_scale^2 I) when "normal" (Dherin et al. 2025's x ~ N(0, I) with x_scale 1); tokens are
    the vectors (x, y), seq_len = n_points + 1; the model predicts y_q.

    x_condition: anisotropic Gaussian inputs (Ahn et al. 2023), x ~ N(0, Σ) with
    Σ = x_scale^2 U diag(λ) Uᵀ, eigenvalues λ_k ∝ x_condition^(k/(x_dim-1)) (condition number
    x_condition, mean eigenvalue 1) and U a random orthogonal basis drawn from `x_basis_seed`
    (null: the coordinate axes). Needs x_dist "normal"; null (the default) keeps N(0, x_scale^2 I)
    (`interp_icl.theory.linear_regression_gd.input_covariance`)."""

    continuous = True
    name: Literal["regression"] = "regression"
    x_dim: int = Field(10, ge=1)
    n_points: int = Field(10, ge=1)
    x_scale: float = Field(1.0, gt=0)
    x_dist: Literal["uniform", "normal"] = "uniform"
    noise: float = Field(0.0, ge=0)
    x_condition: float | None = Field(None, ge=1)
    x_basis_seed: int | None = Field(0, ge=0)

    @property
    def seq_len(self) -> int:
        return self.n_points + 1

    @model_validator(mode="after")
    def _anisotropic(self) -> RegressionConfig:
        if self.x_condition is None:
            require(
                self.x_basis_seed == 0,
                "task.x_basis_seed needs task.x_condition (the covariance it rotates); set both",
            )
            return self
        require(
            self.x_dist == "normal",
            f"task.x_condition needs task.x_dist 'normal', got {self.x_dist!r}",
        )
        require(
            self.x_dim >= 2 or self.x_condition == 1,
            f"task.x_condition {self.x_condition} needs x_dim >= 2 (one dimension has condition 1)",
        )
        return self


class ClassificationConfig(TaskConfigBase):
    """In-context classification (Reddy 2024): `n_pairs` item-label pairs then a target item;
    `n_classes` Gaussian classes in `item_dim` dimensions with within-class noise `epsilon`,
    `n_labels` labels (class k -> label k mod n_labels), Zipf(`zipf_alpha`) class frequencies,
    a fraction `p_bursty` of bursty sequences (n_pairs / `burstiness` classes, each `burstiness`
    times); class means and label vectors come from `class_seed`; seq_len = 2 n_pairs + 1
    (`interp_icl.tasks.classification`). Defaults are the paper's."""

    continuous = True
    name: Literal["classification"] = "classification"
    n_classes: int = Field(512, ge=1)
    n_labels: int = Field(32, ge=2)
    n_pairs: int = Field(8, ge=1)
    item_dim: int = Field(63, ge=1)
    epsilon: float = Field(0.1, ge=0)
    zipf_alpha: float = Field(0.0, ge=0)
    burstiness: int = Field(2, ge=1)
    p_bursty: float = Field(1.0, ge=0, le=1)
    class_seed: int = Field(0, ge=0)

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 1

    @model_validator(mode="after")
    def _fits(self) -> ClassificationConfig:
        require(
            self.n_pairs % self.burstiness == 0,
            f"task.n_pairs ({self.n_pairs}) must be a multiple of task.burstiness "
            f"({self.burstiness})",
        )
        groups = self.n_pairs // self.burstiness
        require(
            groups <= min(self.n_classes, self.n_labels),
            f"a bursty sequence needs n_pairs / burstiness = {groups} distinct classes and labels; "
            f"raise task.burstiness or task.n_classes / task.n_labels",
        )
        require(
            self.n_classes >= 2 or self.p_bursty == 1,
            "non-bursty sequences need task.n_classes >= 2 (the target's class is kept out of "
            "the in-weights evaluation context)",
        )
        return self


register_task("markov", MarkovConfig, "interp_icl.tasks.markov:MarkovTask")
register_task("repeated", RepeatedConfig, "interp_icl.tasks.repeated:RepeatedTokensTask")
register_task("regression", RegressionConfig, "interp_icl.tasks.regression:RegressionTask")
register_task(
    "classification", ClassificationConfig, "interp_icl.tasks.classification:ClassificationTask"
)
