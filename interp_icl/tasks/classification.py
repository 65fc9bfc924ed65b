"""In-context classification (Reddy, ICLR 2024), REFERENCE §3.

**Classes and labels.** K = ``n_classes`` class means μ_k ~ N(0, I_D/D) and L = ``n_labels`` label
vectors ~ N(0, I_D/D), D = ``item_dim``; class k has label k mod L. An item of class k is
(μ_k + ε η)/√(1+ε²), η ~ N(0, I_D/D) drawn afresh for every item (ε = ``epsilon``). Class k is
drawn with probability ∝ (k+1)^−α (Zipf, α = ``zipf_alpha``; class 0 is the most frequent).

The means and label vectors are fixed for a task: they are drawn from
``interp_icl.seeding.generator(class_seed, "classification", "classes")``, so a task is a
pure function of its task config (tasks get no run seed; ``task.class_seed``, default 0, picks a
different set of classes). Sequences are drawn from the generator passed to `sample`.

**Sequences.** N = ``n_pairs`` item-label pairs then a target item, T = 2N + 1 tokens: items at
positions 0, 2, ..., 2N − 2, each followed by its label at 2i + 1, the target at 2N. A *bursty*
sequence (probability ``p_bursty``) draws N/B classes with distinct labels (B = ``burstiness``)
one after another, each by Zipf among the classes whose label is not yet drawn (the reference
code's ``no_repeats``), repeats each B times in a random order, and takes its target from the
first class drawn (so the target's class is Zipf-distributed and always in the context, and the
context holds exactly N/B distinct labels). A non-bursty
sequence draws the target's class and the N context classes independently from Zipf.

Evaluation sets (`icl_batch`, `iwl_batch`):
  * in-context (ICL): bursty sequences of N/B *novel* classes — means drawn afresh for every
    sequence, never the training means — with distinct labels drawn uniformly from the L labels,
    so the answer is available only in the context;
  * in-weights (IWL): non-bursty sequences of training classes whose context never contains the
    target's class, so the answer is available only from memorised class → label maps.

**Token layout** ``[B, T, D + T + 1]`` float: channels ``[0, D)`` hold the item or label vector,
``[D, D + T)`` a one-hot code of the position, and the last channel the *label id* (as a float)
of the token: an item's and the target's is its class's label, a label token's is its own. The
last channel is bookkeeping (the trainer passes only tokens, so the target label travels inside
them, like regression's y_q): `model_input` strips it, `targets` reads the target's. Metadata:
``classes`` ``[B, N + 1]`` int64 class ids of the N items and the target (−1 for novel classes)
and ``bursty`` ``[B]`` bool.

**Losses** are cross-entropies of the target's label in nats (uniform guessing: log L).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from interp_icl.builtin_tasks import ClassificationConfig
from interp_icl.tasks.base import Batch
from interp_icl.seeding import generator as named_generator

PROB_FLOOR = 1e-12  # oracle probabilities are floored here before the log (27.6 nats at most)
REJECTION_ROUNDS = 32  # rejection rounds of `_draw` before the masked draw of the rest


class ClassificationTask:
    def __init__(self, config: ClassificationConfig):
        self.config = config
        self.n_pairs = config.n_pairs
        self.item_dim = config.item_dim
        self.n_labels = config.n_labels
        draw = named_generator(config.class_seed, "classification", "classes")
        d = config.item_dim
        self.means = torch.randn(config.n_classes, d, generator=draw) / math.sqrt(d)  # [K, D]
        self.label_vectors = torch.randn(config.n_labels, d, generator=draw) / math.sqrt(d)
        self.class_labels = torch.arange(config.n_classes) % config.n_labels  # [K]
        weights = (torch.arange(config.n_classes, dtype=torch.float64) + 1) ** -config.zipf_alpha
        self.class_probs = weights / weights.sum()  # [K] float64
        self._eval_sets: dict[int, tuple[Batch, Batch]] = {}

    @property
    def vocab_size(self) -> int:
        """Token width D + T + 1 (vector, one-hot position, label-id channel); no vocabulary."""
        return self.item_dim + self.seq_len + 1

    @property
    def seq_len(self) -> int:
        return 2 * self.n_pairs + 1

    @property
    def input_width(self) -> int:
        """Width of what a model sees, D + T (the label-id channel stripped)."""
        return self.item_dim + self.seq_len

    # ----- sampling ------------------------------------------------------------------------------
    def _items(self, means: Tensor, g: torch.Generator) -> Tensor:
        """Noisy items (μ + ε η)/√(1+ε²) of the means ``[..., D]``."""
        eps = self.config.epsilon
        noise = torch.randn(means.shape, generator=g) / math.sqrt(self.item_dim)
        return (means + eps * noise) / math.sqrt(1 + eps**2)

    def _draw(
        self, n: int, g: torch.Generator, allowed: Callable[[Tensor, Tensor], Tensor]
    ) -> Tensor:
        """One class per row ``[n]`` int64, drawn ∝ the Zipf class probabilities among the classes
        that ``allowed(rows, classes)`` (elementwise, broadcasting) permits for that row — the exact
        conditional law. Rejection from the unconditioned law (cheap for large K); rows still
        rejected after `REJECTION_ROUNDS` are drawn from their masked weights directly."""
        out = torch.multinomial(self.class_probs, n, replacement=True, generator=g)
        pending = torch.nonzero(~allowed(torch.arange(n), out)).flatten()
        for _ in range(REJECTION_ROUNDS):
            if len(pending) == 0:
                return out
            redraw = torch.multinomial(self.class_probs, len(pending), replacement=True, generator=g)
            out[pending] = redraw
            pending = pending[~allowed(pending, redraw)]
        if len(pending):
            every = torch.arange(len(self.class_probs)).expand(len(pending), -1)  # [m, K]
            weights = self.class_probs * allowed(pending[:, None], every)
            out[pending] = torch.multinomial(weights, 1, generator=g)[:, 0]
        return out

    def _bursty_classes(self, n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Context classes ``[n, N]`` (N/B classes with distinct labels, B times each, shuffled)
        and target classes ``[n]`` (the first class drawn). The N/B classes are drawn one after
        another, each ∝ Zipf among the classes whose label is not yet in the row."""
        groups = self.n_pairs // self.config.burstiness
        labels = self.class_labels
        taken = torch.empty(n, 0, dtype=torch.long)  # labels drawn so far [n, j]
        chosen = []
        for _ in range(groups):
            def allowed(rows: Tensor, classes: Tensor, taken: Tensor = taken) -> Tensor:
                return ~(labels[classes][..., None] == taken[rows]).any(-1)

            drawn = self._draw(n, g, allowed)
            chosen.append(drawn)
            taken = torch.cat([taken, labels[drawn][:, None]], dim=1)
        chosen_classes = torch.stack(chosen, dim=1)  # [n, N/B]
        return self._repeat_shuffled(chosen_classes, g), chosen_classes[:, 0]

    def _repeat_shuffled(self, groups: Tensor, g: torch.Generator) -> Tensor:
        """``[n, N/B]`` -> each entry B times in a random order ``[n, N]``."""
        repeated = groups.repeat_interleave(self.config.burstiness, dim=1)
        order = torch.rand(repeated.shape, generator=g).argsort(dim=1)
        return repeated.gather(1, order)

    def _iid_classes(
        self, n: int, g: torch.Generator, exclude_target: bool
    ) -> tuple[Tensor, Tensor]:
        """Non-bursty: target ``[n]`` and context classes ``[n, N]`` drawn i.i.d. by Zipf; with
        `exclude_target` the context is drawn from Zipf conditioned on differing from the target."""
        target = torch.multinomial(self.class_probs, n, replacement=True, generator=g)
        if not exclude_target:
            context = torch.multinomial(
                self.class_probs, n * self.n_pairs, replacement=True, generator=g
            )
            return context.view(n, self.n_pairs), target
        row_target = target.repeat_interleave(self.n_pairs)  # [n N]
        context = self._draw(
            n * self.n_pairs, g, lambda rows, classes: classes != row_target[rows]
        )
        return context.view(n, self.n_pairs), target

    def _assemble(
        self, items: Tensor, item_labels: Tensor, target: Tensor, target_label: Tensor
    ) -> Tensor:
        """Tokens ``[n, T, D + T + 1]`` from context items ``[n, N, D]`` with labels ``[n, N]`` and
        target items ``[n, D]`` with labels ``[n]`` (module docstring for the layout)."""
        n, seq, d = items.shape[0], self.seq_len, self.item_dim
        tokens = torch.zeros(n, seq, d + seq + 1)
        tokens[:, 0:-1:2, :d] = items
        tokens[:, 1:-1:2, :d] = self.label_vectors[item_labels]
        tokens[:, -1, :d] = target
        tokens[:, :, d : d + seq] = torch.eye(seq)
        ids = torch.cat(
            [item_labels.repeat_interleave(2, dim=1), target_label[:, None]], dim=1
        ).float()
        tokens[:, :, -1] = ids
        return tokens

    def _from_classes(self, context: Tensor, target: Tensor, g: torch.Generator) -> Tensor:
        items = self._items(self.means[context], g)
        target_items = self._items(self.means[target], g)
        return self._assemble(
            items, self.class_labels[context], target_items, self.class_labels[target]
        )

    def sample(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` training-distribution sequences: a fraction p_bursty bursty, the rest i.i.d.
        Tokens ``[n, 2N + 1, D + 2N + 2]``; metadata ``classes`` ``[n, N + 1]``, ``bursty`` ``[n]``."""
        bursty = torch.rand(n, generator=generator) < self.config.p_bursty
        context = torch.empty(n, self.n_pairs, dtype=torch.long)
        target = torch.empty(n, dtype=torch.long)
        if bursty.any():
            context[bursty], target[bursty] = self._bursty_classes(int(bursty.sum()), generator)
        if not bursty.all():
            context[~bursty], target[~bursty] = self._iid_classes(
                int((~bursty).sum()), generator, exclude_target=False
            )
        tokens = self._from_classes(context, target, generator)
        classes = torch.cat([context, target[:, None]], dim=1)
        return Batch(tokens, {"classes": classes, "bursty": bursty})

    def iwl_batch(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` in-weights sequences: non-bursty, training classes, the target's class absent
        from the context."""
        context, target = self._iid_classes(n, generator, exclude_target=True)
        tokens = self._from_classes(context, target, generator)
        classes = torch.cat([context, target[:, None]], dim=1)
        return Batch(tokens, {"classes": classes, "bursty": torch.zeros(n, dtype=torch.bool)})

    def icl_batch(self, n: int, generator: torch.Generator) -> Batch:
        """``n`` in-context sequences: bursty, N/B novel classes (fresh means per sequence) with
        distinct uniformly drawn labels; the target's class is the first of them."""
        groups = self.n_pairs // self.config.burstiness
        d = self.item_dim
        means = torch.randn(n, groups, d, generator=generator) / math.sqrt(d)
        labels = torch.rand(n, self.n_labels, generator=generator).argsort(dim=1)[:, :groups]
        slot = self._repeat_shuffled(torch.arange(groups).expand(n, -1), generator)  # [n, N]
        items = self._items(means.gather(1, slot[..., None].expand(-1, -1, d)), generator)
        target = self._items(means[:, 0], generator)
        tokens = self._assemble(items, labels.gather(1, slot), target, labels[:, 0])
        classes = torch.full((n, self.n_pairs + 1), -1, dtype=torch.long)
        return Batch(tokens, {"classes": classes, "bursty": torch.ones(n, dtype=torch.bool)})

    def eval_sets(self, n: int) -> tuple[Batch, Batch]:
        """The fixed (ICL, IWL) evaluation sets of ``n`` sequences each, drawn from generators
        derived from ``class_seed`` (the same for every run of this task config)."""
        if n not in self._eval_sets:
            seed = self.config.class_seed
            self._eval_sets[n] = (
                self.icl_batch(n, named_generator(seed, "classification", "icl-eval")),
                self.iwl_batch(n, named_generator(seed, "classification", "iwl-eval")),
            )
        return self._eval_sets[n]

    # ----- what a model sees and what it must predict -------------------------------------------
    @staticmethod
    def model_input(tokens: Tensor) -> Tensor:
        """The tokens without the label-id channel ``[B, T, D + T]``."""
        return tokens[..., :-1]

    @staticmethod
    def targets(tokens: Tensor) -> Tensor:
        """The target's label id ``[B]`` int64."""
        return tokens[:, -1, -1].round().long()

    @staticmethod
    def context_labels(tokens: Tensor) -> Tensor:
        """Label ids of the N context label tokens ``[B, N]`` int64."""
        return tokens[:, 1:-1:2, -1].round().long()

    def train_loss(self, model: nn.Module, tokens: Tensor) -> Tensor:
        """Mean cross-entropy (nats) of the target's label (a scalar to backpropagate)."""
        logits = model.predict(self.model_input(tokens))
        return F.cross_entropy(logits, self.targets(tokens))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch: Batch) -> dict[str, float]:
        """On `batch` (training distribution): ``eval_loss`` (nats) and ``accuracy``; on the fixed
        ICL set of the same size: ``icl_accuracy``, ``icl_loss`` and ``context_label_accuracy``
        (the prediction is one of the context labels); on the IWL set: ``iwl_accuracy``."""
        device = batch.tokens.device
        icl, iwl = (b.to(device) for b in self.eval_sets(len(batch)))
        row = {}
        for prefix, data in (("eval", batch), ("icl", icl), ("iwl", iwl)):
            logits = model.predict(self.model_input(data.tokens))
            target = self.targets(data.tokens)
            row[f"{prefix}_loss"] = float(F.cross_entropy(logits, target))
            acc = (logits.argmax(-1) == target).double().mean()
            row["accuracy" if prefix == "eval" else f"{prefix}_accuracy"] = float(acc)
            if prefix == "icl":
                hit = (logits.argmax(-1)[:, None] == self.context_labels(data.tokens)).any(1)
                row["context_label_accuracy"] = float(hit.double().mean())
        return row

    # ----- oracles -------------------------------------------------------------------------------
    def in_context_probs(self, batch: Batch) -> Tensor:
        """The in-context oracle's law of the target's label ``[B, L]`` (float64).

        It assumes, with probability p_bursty, that the target's class is one of the context
        items' classes, each item equally likely a priori, and weighs item i by the likelihood
        ratio of (target, item i) being of one class with an unknown mean μ ~ N(0, I/D) versus two
        independent classes: with s² = 1 + ε², p(x_t | x_i, same) = N(x_t; x_i/s², (1 − s⁻⁴)/D)
        and p(x_t | different) = N(x_t; 0, 1/D). This is the exact Bayes posterior of a bursty
        sequence of novel classes when B = 1 (other context items are then independent of the
        target); for B > 1 it ignores the extra evidence of repeats, and it never uses memorised
        class means, so on training classes the full Bayes loss can be lower. With the remaining
        probability 1 − p_bursty it predicts the labels' Zipf marginal. With ε = 0 the same-class
        variance is floored at 1e-12/D (nearest-match, exact for noiseless items).
        """
        tokens = batch.tokens.double()
        d = self.item_dim
        items, target = tokens[:, 0:-1:2, :d], tokens[:, -1, :d]
        s2 = 1 + self.config.epsilon**2
        var_same = max(1 - s2**-2, 1e-12) / d
        var_diff = 1.0 / d
        log_same = -((target[:, None] - items / s2) ** 2).sum(-1) / (2 * var_same)
        log_same = log_same - 0.5 * d * math.log(var_same)
        log_diff = -(target**2).sum(-1, keepdim=True) / (2 * var_diff) - 0.5 * d * math.log(
            var_diff
        )
        log_ratio = log_same - log_diff  # [B, N]
        weights = torch.softmax(log_ratio, dim=1)
        labels = self.context_labels(batch.tokens)
        posterior = torch.zeros(len(batch), self.n_labels, dtype=torch.float64)
        posterior.scatter_add_(1, labels, weights)
        p = self.config.p_bursty
        if p < 1:
            marginal = torch.zeros(self.n_labels, dtype=torch.float64)
            marginal.scatter_add_(0, self.class_labels, self.class_probs)
            posterior = p * posterior + (1 - p) * marginal
        return posterior

    def baseline_losses(self, batch: Batch) -> dict[str, float]:
        """``bayes_loss``: cross-entropy (nats) of the in-context oracle (`in_context_probs`),
        floored at 1e-12; ``bayes_accuracy``: its accuracy; ``uniform_loss`` = log L."""
        probs = self.in_context_probs(batch.to("cpu"))
        target = self.targets(batch.tokens.cpu())
        picked = probs.gather(1, target[:, None])[:, 0].clamp_min(PROB_FLOOR)
        return {
            "bayes_loss": float(-picked.log().mean()),
            "bayes_accuracy": float((probs.argmax(-1) == target).double().mean()),
            "uniform_loss": math.log(self.n_labels),
        }

    def describe(self) -> dict[str, object]:
        c = self.config
        return {
            "task": "classification",
            "n_classes": c.n_classes,
            "n_labels": c.n_labels,
            "n_pairs": c.n_pairs,
            "item_dim": c.item_dim,
            "epsilon": c.epsilon,
            "zipf_alpha": c.zipf_alpha,
            "burstiness": c.burstiness,
            "p_bursty": c.p_bursty,
            "class_seed": c.class_seed,
            "seq_len": self.seq_len,
        }


__all__ = ["ClassificationTask"]
