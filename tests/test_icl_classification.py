"""In-context classification (Reddy 2024): the sampler, the in-context oracle, the classifier
network, its progress measures on hand-set attention patterns, training and resuming through the
project's trainer, and config errors."""

from __future__ import annotations

import math

import pytest
import torch

from interp_icl.analysis.icl_classification import (
    per_sequence_measures,
    progress_measures,
    progress_over_checkpoints,
)
from interp_icl.config import ModelConfig, RunConfig, TaskConfig
from interp_icl.errors import ConfigError
from interp_icl.models import build_model, training_module
from interp_icl.presets import PRESETS
from interp_icl.tasks import is_continuous, make_task
from interp_icl.tasks.classification import ClassificationTask


def task(**fields) -> ClassificationTask:
    return make_task(TaskConfig(name="classification", **fields))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


SMALL = {"n_classes": 16, "n_labels": 8, "n_pairs": 4, "item_dim": 6}


def classifier(t: ClassificationTask, seed=0, **sizes):
    config = ModelConfig(
        family="classifier",
        n_heads=1,
        n_labels=t.n_labels,
        **{"d_model": 16, "d_head": 8, "d_mlp": 16, **sizes},
    )
    return build_model(config, t.vocab_size, t.seq_len, seed)


def test_layout_bursty_structure_and_seeding():
    t = task()  # the paper's defaults
    assert (t.config.n_labels, t.n_pairs, t.item_dim, t.config.n_classes) == (32, 8, 63, 512)
    assert (t.config.epsilon, t.config.zipf_alpha, t.config.burstiness) == (0.1, 0.0, 2)
    assert is_continuous(t) and t.seq_len == 17 and t.vocab_size == 63 + 17 + 1
    batch = t.sample(64, gen())
    tokens, classes = batch.tokens, batch.metadata["classes"]
    assert tokens.shape == (64, 17, 81) and classes.shape == (64, 9)
    assert torch.equal(tokens[0, :, 63:80], torch.eye(17))  # one-hot positions
    # bursty: 4 classes twice each, the target's class among them, labels k mod L
    for row in classes:
        counts = torch.bincount(row[:-1])
        assert sorted(counts[counts > 0].tolist()) == [2, 2, 2, 2] and row[-1] in row[:-1]
    assert torch.equal(t.targets(tokens), classes[:, -1] % 32)
    assert torch.equal(t.context_labels(tokens), classes[:, :-1] % 32)
    assert torch.equal(tokens[:, 1:-1:2, :63], t.label_vectors[classes[:, :-1] % 32])
    # items are (mu + eps eta)/sqrt(1+eps^2): close to their class mean, far from the others
    items = tokens[:, 0:-1:2, :63]
    near = (items * math.sqrt(1.01) - t.means[classes[:, :-1]]).norm(dim=-1)
    assert near.max() < 0.2
    assert t.model_input(tokens).shape == (64, 17, 80)
    again = task()
    assert torch.equal(again.means, t.means) and torch.equal(again.sample(64, gen()).tokens, tokens)
    assert not torch.equal(task(class_seed=1).means, t.means)


def test_non_bursty_and_iwl_sequences_keep_the_target_out_of_context():
    t = task(**SMALL, p_bursty=0.0)
    iwl = t.iwl_batch(256, gen(1)).metadata["classes"]
    assert not (iwl[:, :-1] == iwl[:, -1:]).any()
    mixed = task(**SMALL, p_bursty=0.5).sample(400, gen(2))
    assert 0.4 < mixed.metadata["bursty"].double().mean() < 0.6


def test_icl_set_uses_novel_classes_with_distinct_labels():
    t = task(**SMALL, epsilon=0.0)
    batch = t.icl_batch(128, gen(3))
    items = batch.tokens[:, 0:-1:2, : t.item_dim]
    distance = torch.cdist(items.reshape(-1, t.item_dim), t.means)
    assert distance.min() > 1e-3  # no item is a training class mean
    labels, target = t.context_labels(batch.tokens), t.targets(batch.tokens)
    assert (labels == target[:, None]).sum(1).eq(2).all()  # B = 2 copies of the answer
    for row in labels:
        assert len(set(row.tolist())) == 2  # N/B = 2 distinct labels


def test_zipf_class_frequencies():
    t = task(n_classes=6, n_labels=6, n_pairs=4, item_dim=3, zipf_alpha=1.0)
    classes = t.sample(20_000, gen(4)).metadata["classes"][:, -1]
    freq = torch.bincount(classes, minlength=6).double() / 20_000
    expected = 1 / torch.arange(1, 7, dtype=torch.float64)
    torch.testing.assert_close(freq, expected / expected.sum(), atol=0.01, rtol=0)


def test_oracle_is_exact_on_noiseless_bursty_sequences():
    t = task(**SMALL, epsilon=0.0)
    for batch in (t.sample(256, gen(5)), t.icl_batch(256, gen(6))):
        probs = t.in_context_probs(batch)
        assert torch.equal(probs.argmax(-1), t.targets(batch.tokens))
        losses = t.baseline_losses(batch)
        assert losses["bayes_accuracy"] == 1.0 and losses["bayes_loss"] < 1e-6
        assert losses["uniform_loss"] == pytest.approx(math.log(8))
    noisy = task(**SMALL, epsilon=0.1)
    assert noisy.baseline_losses(noisy.sample(256, gen(7)))["bayes_accuracy"] == 1.0


def test_classifier_shapes_hooks_and_input_checks():
    t = task(**SMALL)
    model = classifier(t)
    x = t.model_input(t.sample(5, gen()).tokens)
    logits, cache = model.run_with_cache(x)
    assert logits.shape == (5, 8) and torch.equal(model.predict(x), logits)
    for layer in (0, 1):
        assert cache[f"blocks.{layer}.attn.hook_pattern"].shape == (5, 1, 9, 9)
        assert cache[f"blocks.{layer}.hook_resid_post"].shape == (5, 9, 16)
        assert cache[f"blocks.{layer}.attn.hook_z"].shape == (5, 9, 1, 8)
    assert cache["mlp.hook_hidden_3"].shape == (5, 16)
    assert training_module(model) is model
    with pytest.raises(Exception, match="tokens must have shape"):
        model(t.sample(2, gen()).tokens)  # the label-id channel left in


def uniform_model(t):
    """A classifier whose attention is uniform over the causal window (zero queries)."""
    model = classifier(t)
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
    return model


def test_progress_measures_on_uniform_attention():
    t = task(**SMALL)
    batch = t.icl_batch(64, gen(8))
    result = progress_measures(uniform_model(t), batch, t.iwl_batch(64, gen(9)))
    s = result.summary
    n, seq = 4, 9
    assert s["label_to_item_attn"] == pytest.approx(sum(1 / (2 * i + 2) for i in range(n)) / n)
    assert s["target_to_correct_label_attn"] == pytest.approx(2 / seq)  # B = 2 correct labels
    assert s["target_to_labels_attn"] == pytest.approx(n / seq)
    assert set(result.table["metric"]) == {
        "label_to_item_attn",
        "target_to_correct_label_attn",
        "target_to_labels_attn",
        "context_label_accuracy",
        "icl_accuracy",
        "iwl_accuracy",
    }
    assert (result.table["n"] == 64).all() and result.table["stderr"].notna().all()


def test_progress_measures_on_patterns_set_by_hooks():
    """Layer 1: an exact previous-token pattern; layer 2: the target puts 0.3 on every label token
    carrying its label and the rest on itself. Logits are overwritten to predict the target's
    label on even sequences and an absent label on odd ones."""
    t = task(**SMALL)
    batch = t.icl_batch(32, gen(10))
    labels, target = t.context_labels(batch.tokens), t.targets(batch.tokens)
    seq = t.seq_len
    previous = torch.zeros(seq, seq)
    previous[0, 0] = 1.0
    previous[torch.arange(1, seq), torch.arange(seq - 1)] = 1.0
    second = torch.zeros(32, 1, seq, seq)
    second[:, 0] = torch.eye(seq)
    second[:, 0, -1] = 0.0
    correct = labels == target[:, None]  # [32, N]
    second[:, 0, -1, 1:-1:2] = 0.3 * correct
    second[:, 0, -1, -1] = 1 - 0.3 * correct.sum(1)
    absent = torch.tensor(
        [next(label for label in range(8) if label not in row) for row in labels.tolist()]
    )
    chosen = torch.where(torch.arange(32) % 2 == 0, target, absent)

    hooks = [
        ("blocks.0.attn.hook_pattern", lambda p, hook: previous.expand_as(p).clone()),
        ("blocks.1.attn.hook_pattern", lambda p, hook: second),
        ("hook_logits", lambda z, hook: torch.nn.functional.one_hot(chosen, 8).float()),
    ]
    values = per_sequence_measures(classifier(t), batch, hooks)
    assert torch.allclose(values["label_to_item_attn"], torch.ones(32, dtype=torch.float64))
    expected = 0.3 * correct.sum(1).double()
    torch.testing.assert_close(values["target_to_correct_label_attn"], expected)
    torch.testing.assert_close(values["target_to_labels_attn"], expected)
    assert values["accuracy"].tolist() == [1.0, 0.0] * 16
    assert values["context_label_accuracy"].tolist() == [1.0, 0.0] * 16
    summary = progress_measures(classifier(t), batch, fwd_hooks=hooks).summary
    assert summary["icl_accuracy"] == 0.5 and summary[
        "target_to_correct_label_attn"
    ] == pytest.approx(0.6)


def run_config(**train):
    return RunConfig.from_dict(
        {
            "seed": 0,
            "task": {"name": "classification", **SMALL},
            "model": {
                "family": "classifier",
                "n_heads": 1,
                "d_model": 16,
                "d_head": 8,
                "d_mlp": 16,
            },
            "train": {
                "steps": 30,
                "batch_size": 32,
                "optimizer": "sgd",
                "lr": 0.05,
                "weight_decay": 1e-6,
                "grad_clip": None,
                "eval_every": 10,
                "n_eval": 64,
                "checkpoint_every": 10,
                "device": "cpu",
                **train,
            },
        }
    )


def test_trains_resumes_exactly_and_measures_every_checkpoint(tmp_path):
    from interp_icl.training import rundir
    from interp_icl.training.loading import load_run
    from interp_icl.training.trainer import Trainer

    cfg = run_config()
    assert cfg.model.n_labels == 8  # filled in from the task
    full = Trainer.create(cfg, tmp_path / "full", progress=False).run()
    for key in ("eval_loss", "icl_accuracy", "iwl_accuracy", "context_label_accuracy"):
        assert key in full.final
    assert full.final["loss_minus_bayes"] == pytest.approx(
        full.final["eval_loss"] - full.final["bayes_loss"]
    )
    assert full.final["uniform_loss"] == pytest.approx(math.log(8))
    Trainer.create(cfg, tmp_path / "cut", progress=False).run(stop_after=17)
    resumed = Trainer.resume(tmp_path / "cut", progress=False)
    assert resumed.step == 16
    resumed.run()

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]

    assert strip(rundir.read_metrics(tmp_path / "cut")) == strip(
        rundir.read_metrics(tmp_path / "full")
    )
    a, b = load_run(tmp_path / "full").model, load_run(tmp_path / "cut").model
    for (name, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), name
    frame = progress_over_checkpoints(tmp_path / "full", n=32, steps=[0, 30])
    assert list(frame.columns) == ["step", "metric", "value", "stderr", "n"]
    assert len(frame) == 12 and set(frame["step"]) == {0, 30}


@pytest.mark.parametrize(
    "task_fields,model_fields,message",
    [
        ({"name": "classification"}, {"family": "standard"}, "needs 'classifier'"),
        ({"name": "markov"}, {"family": "classifier", "n_heads": 1}, "cannot learn task 'markov'"),
        ({"name": "regression"}, {"family": "classifier", "n_heads": 1}, "cannot learn task"),
        ({"name": "classification"}, {"family": "classifier"}, "set model.n_heads 1"),
        (
            {"name": "classification", "n_pairs": 7},
            {"family": "classifier", "n_heads": 1},
            "multiple of task.burstiness",
        ),
        (
            {"name": "classification", "n_labels": 3},
            {"family": "classifier", "n_heads": 1},
            "distinct classes and labels",
        ),
        (
            {"name": "classification", "epsilon": -1},
            {"family": "classifier", "n_heads": 1},
            "task.epsilon must be",
        ),
        (
            {"name": "classification", "p_bursty": 2},
            {"family": "classifier", "n_heads": 1},
            "task.p_bursty must be",
        ),
        (
            {"name": "classification"},
            {"family": "classifier", "n_heads": 1, "n_labels": 5},
            "differs from task.n_labels",
        ),
    ],
)
def test_impossible_classification_configs_are_one_line_errors(task_fields, model_fields, message):
    with pytest.raises(ConfigError, match=message) as info:
        RunConfig.from_dict({"task": task_fields, "model": model_fields})
    assert "\n" not in str(info.value)


def test_preset_is_the_paper_optimiser():
    cfg = PRESETS["icl-classification"]()
    assert cfg.task.name == "classification" and cfg.model.family == "classifier"
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.batch_size) == ("sgd", 0.01, 128)
    assert cfg.train.weight_decay == 1e-6 and cfg.model.n_labels == 32
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
