"""The roles of the two-layer circuit, one file each, with typed checks (REFERENCE §1).

    copier.py      layer 1: per parent, the head set that carries it into the last layer's keys/queries
    selector.py    what the last layer compares: the classifier query reads the parents only
    classifier.py  the last layer: match-pattern attention over keys whose parent context matches
    hypothesis.py  the GIH hypothesis as one causal test (causal scrubbing): the loss it recovers
    validation.py  every check on the known-answer zoo (`interp_icl.models.zoo`): the confusion table
    check.py       Check, HeadEffect, RoleResult: what every role returns and every renderer reads
    context.py     validated inputs, estimator losses, intervals shared by the roles
    heads.py       head sets, path ablations and the account of a head outside the sets
    console.py     rich tables rendered from checks

"Layer 1" means the copier layers (every layer before the last) and "the last layer" the
classifier layer (`interp_icl.models.layout`). A 1-layer model has no such circuit: every role is
then not applicable (``RoleResult.not_applicable`` says why, ``holds`` is None).

`role_experiments(model, tokens, parents, beta, reference_tokens, seed)` runs all three on clean
sequences ``[B, T]`` of an in-context Markov task; `roles_on_task(model, task, n, seed)` draws them;
`hypothesis_on_task` runs the GIH hypothesis test (`hypothesis.py`) on the same sequences.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for
from interp_icl.analysis.result import make_table
from interp_icl.errors import require
from interp_icl.models.layout import NO_CIRCUIT
from interp_icl.roles.check import Check, HeadEffect, RoleResult
from interp_icl.roles.classifier import classifier_role
from interp_icl.roles.context import RoleContext
from interp_icl.roles.copier import copier_role
from interp_icl.roles.hypothesis import HypothesisResult, hypothesis_test
from interp_icl.roles.selector import selector_role
from interp_icl.seeding import generator, seeded

ROLES = ("copier", "selector", "classifier")
ROLE_SEQUENCES = 256
ROLE_REFERENCE_SEQUENCES = 1024


def role_experiments(
    model: nn.Module,
    tokens: Tensor,
    parents: Sequence[int],
    beta: float,
    reference_tokens: Tensor | None = None,
    seed: int = 0,
) -> dict[str, RoleResult]:
    """{role: RoleResult} on `tokens` ``[B, T]`` (clean sequences of a task with `parents`);
    `reference_tokens` ``[R, T]`` give the means of mean ablations (default: `tokens`)."""
    ctx = RoleContext.make(model, tokens, parents, beta)
    reference = ctx.tokens if reference_tokens is None else check_tokens_for(model, reference_tokens)
    require(reference.shape[1] == ctx.tokens.shape[1], "reference tokens must have the clean tokens' length")
    if not ctx.shape.has_circuit:
        return {role: RoleResult(role, [], make_table([]), not_applicable=NO_CIRCUIT) for role in ROLES}
    return {
        "copier": copier_role(ctx, reference),
        "selector": selector_role(ctx, seeded(seed)),
        "classifier": classifier_role(ctx, reference),
    }


def _task_tokens(task, n_sequences: int, seed: int):
    require(n_sequences >= 4, f"--n-sequences must be at least 4 for the role experiments, got {n_sequences}")
    require(
        getattr(task.config, "name", None) == "markov",
        f"the role experiments need an in-context Markov task (parents); this run's task is {task.config.name!r}",
    )
    return task.sample(n_sequences, generator(seed, "roles", "clean")).tokens


def roles_on_task(model: nn.Module, task, n_sequences: int = ROLE_SEQUENCES, seed: int = 0) -> dict[str, RoleResult]:
    """The role experiments on `n_sequences` clean sequences of an in-context Markov task (means
    from ROLE_REFERENCE_SEQUENCES more), seeded by `seed`."""
    tokens = _task_tokens(task, n_sequences, seed)
    reference = task.sample(ROLE_REFERENCE_SEQUENCES, generator(seed, "roles", "reference")).tokens
    return role_experiments(model, tokens, task.config.parents, float(task.config.alpha), reference, seed)


def hypothesis_on_task(model: nn.Module, task, n_sequences: int = ROLE_SEQUENCES, seed: int = 0) -> HypothesisResult | None:
    """The GIH hypothesis test on the sequences `roles_on_task` uses (None for a 1-layer model)."""
    ctx = RoleContext.make(model, _task_tokens(task, n_sequences, seed), task.config.parents, float(task.config.alpha))
    return hypothesis_test(ctx, seed) if ctx.shape.has_circuit else None


__all__ = [
    "ROLES",
    "Check",
    "HeadEffect",
    "HypothesisResult",
    "RoleResult",
    "hypothesis_on_task",
    "role_experiments",
    "roles_on_task",
]
