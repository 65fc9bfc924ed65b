"""Progress measures of in-context classification (Reddy 2024, REFERENCE §3).

For a model with the classifier hook contract (``blocks.{0,1}.attn.hook_pattern``
``[B, head, T, T]``, head 0 read; logits ``[B, L]`` at the target from ``model(x)``) and batches
of `interp_icl.tasks.classification.ClassificationTask` (items at even positions, labels at odd,
target last), per sequence:

  * ``label_to_item_attn``: layer-1 attention of each label token (2i + 1) to its item (2i),
    averaged over the N labels (a previous-token head gives 1; uniform causal attention
    mean_i 1/(2i + 2));
  * ``target_to_correct_label_attn``: layer-2 attention from the target to the label tokens whose
    label is the target's, summed over them (B copies in a bursty sequence);
  * ``target_to_labels_attn``: layer-2 attention from the target to all N label tokens, summed;
  * ``context_label_accuracy``: 1 if the predicted label is one of the context labels (chance on
    a bursty novel-class sequence: N/B / L; a model that picks a context label at random: 1);
  * ``icl_accuracy`` on the in-context batch, ``iwl_accuracy`` on the in-weights batch (chance
    1/L);
  * the induction-head scores of `interp_icl.analysis.head_scores` in TransformerLens's
    `detect_head` conventions ("mul": Σ A⊙P / Σ A, "abs": 1 − Σ|A − P| / T, per sequence) where
    they apply: ``previous_token_mul|abs`` of layer 1 against P[i, i−1] = 1 (i ≥ 1), and
    ``induction_mul|abs`` of layer 2 against the prefix-matching pattern P[i, j] = 1 for an item
    or the target at i and a label token j < i whose label is i's label (the token before j, its
    item, "matches" i; in the in-context set, whose classes have distinct labels, that is i's
    class). A perfect induction head scores "mul" = (number of items and target with an earlier
    match) / T, not 1, because rows without a match count in Σ A — TransformerLens's convention.

Each is a mean ± stderr over sequences (`interp_icl.analysis.result`). Attention measures and
context-label accuracy are taken on the in-context batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from interp_icl.analysis.head_scores import pattern_scores
from interp_icl.analysis.result import PassResult, make_table, row
from interp_icl.tasks.base import Batch
from interp_icl.tasks.classification import ClassificationTask

METRICS = (
    "label_to_item_attn",
    "target_to_correct_label_attn",
    "target_to_labels_attn",
    "context_label_accuracy",
    "icl_accuracy",
    "iwl_accuracy",
)
HEAD_SCORES = ("previous_token_mul", "previous_token_abs", "induction_mul", "induction_abs")


@torch.no_grad()
def _patterns_and_logits(
    model: nn.Module, x: Tensor, fwd_hooks: Sequence[tuple[str, object]] = ()
) -> tuple[list[Tensor], Tensor]:
    """Layer-0 and layer-1 head-0 patterns ``[B, T, T]`` and logits ``[B, L]``; `fwd_hooks` run
    before the patterns are read (so a hook may set a pattern)."""
    captured: dict[int, Tensor] = {}

    def keep(layer: int):
        def hook(pattern: Tensor, hook) -> None:
            captured[layer] = pattern[:, 0].detach()

        return hook

    hooks = [*fwd_hooks] + [(f"blocks.{layer}.attn.hook_pattern", keep(layer)) for layer in (0, 1)]
    logits = model.run_with_hooks(x, fwd_hooks=hooks)
    return [captured[0], captured[1]], logits


def detection_patterns(tokens: Tensor) -> dict[str, Tensor]:
    """The previous-token and prefix-matching (induction) patterns of the module docstring for
    classification tokens ``[B, T, D + T + 1]`` (label-id channel last): ``{name: [B, T, T]}``
    float, query i by key j."""
    batch, seq = tokens.shape[:2]
    ids = tokens[:, :, -1].round().long()  # [B, T] label id of every token
    q = torch.arange(seq)[:, None]
    k = torch.arange(seq)[None, :]
    previous = (k == q - 1).expand(batch, seq, seq)
    item_query_label_key = (q % 2 == 0) & (k % 2 == 1) & (k < q)
    induction = (ids[:, :, None] == ids[:, None, :]) & item_query_label_key
    return {"previous_token": previous.float(), "induction": induction.float()}


def per_sequence_measures(
    model: nn.Module, batch: Batch, fwd_hooks: Sequence[tuple[str, object]] = ()
) -> dict[str, Tensor]:
    """Each measure of the module docstring per sequence of `batch` ``[B]`` (float64), plus
    ``accuracy`` (the prediction is the target's label)."""
    tokens = batch.tokens
    (first, second), logits = _patterns_and_logits(
        model, ClassificationTask.model_input(tokens), fwd_hooks
    )
    n_pairs = (tokens.shape[1] - 1) // 2
    items = torch.arange(n_pairs) * 2
    target = ClassificationTask.targets(tokens)
    labels = ClassificationTask.context_labels(tokens)  # [B, N]
    to_labels = second[:, -1, items + 1].double()  # [B, N]
    prediction = logits.argmax(-1)
    patterns = detection_patterns(tokens)
    previous_mul, previous_abs = pattern_scores(first[:, None], patterns["previous_token"])
    induction_mul, induction_abs = pattern_scores(second[:, None], patterns["induction"])
    return {
        "previous_token_mul": previous_mul[:, 0],
        "previous_token_abs": previous_abs[:, 0],
        "induction_mul": induction_mul[:, 0],
        "induction_abs": induction_abs[:, 0],
        "label_to_item_attn": first[:, items + 1, items].double().mean(1),
        "target_to_correct_label_attn": (to_labels * (labels == target[:, None])).sum(1),
        "target_to_labels_attn": to_labels.sum(1),
        "context_label_accuracy": (prediction[:, None] == labels).any(1).double(),
        "accuracy": (prediction == target).double(),
    }


def progress_measures(
    model: nn.Module,
    icl_batch: Batch,
    iwl_batch: Batch | None = None,
    fwd_hooks: Sequence[tuple[str, object]] = (),
) -> PassResult:
    """The progress measures of `model` on an in-context batch (and, if given, an in-weights
    batch): a `PassResult` whose table has one row per metric (unit "model"), whose summary maps
    each metric to its mean. `fwd_hooks` (TransformerLens ``(name, fn)`` pairs) are applied to
    every forward pass."""
    icl = per_sequence_measures(model, icl_batch, fwd_hooks)
    rows = [row("model", name, icl[name]) for name in (*METRICS[:4], *HEAD_SCORES)]
    rows.append(row("model", "icl_accuracy", icl["accuracy"]))
    if iwl_batch is not None:
        iwl = per_sequence_measures(model, iwl_batch, fwd_hooks)
        rows.append(row("model", "iwl_accuracy", iwl["accuracy"]))
    table = make_table(rows)
    summary = {r["metric"]: r["mean"] for r in rows}
    return PassResult("icl_classification", table, summary)
