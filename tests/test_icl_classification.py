"""In-context classification (Reddy 2024): the sampler, the in-context oracle, the classifier
network, its progress measures on hand-set attention patterns, training and resuming through the
project's trainer, and config errors."""

from __future__ import annotations

import math

import pytest
import torch

from interp_icl.analysis.icl_classification import per_sequence_measures, progress_measures
from interp_icl.config import ModelConfig, RunConfig, TaskConfig
from interp_icl.errors import ConfigError
from interp_icl.models import build_model, training_module
from interp_icl.presets import PRESETS
from interp_icl.runs.analysis import progress_over_checkpoints
from interp_icl.runs import open_run
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


def exact_pair_law(t: ClassificationTask) -> torch.Tensor:
    """P(first class i, second class j) of a bursty sequence's two classes by enumeration:
    w_i / W times w_j / (mass of the classes whose label differs from i's) ``[K, K]``."""
    w, labels = t.class_probs, t.class_labels
    law = torch.zeros(len(w), len(w), dtype=torch.float64)
    for i in range(len(w)):
        other = labels != labels[i]
        law[i, other] = w[i] * w[other] / w[other].sum()
    return law


@pytest.mark.parametrize(
    "fields",
    [
        {"n_classes": 6, "n_labels": 3, "zipf_alpha": 1.0},  # label collisions excluded
        {"n_classes": 5, "n_labels": 5, "zipf_alpha": 8.0},  # mostly the masked fallback
    ],
)
def test_bursty_classes_follow_successive_sampling_with_distinct_labels(fields):
    t = task(**fields, n_pairs=4, item_dim=3)
    n = 40_000
    classes = t.sample(n, gen(8)).metadata["classes"]
    # the two classes of each row in order of drawing: the target's, then the other one
    other = torch.where(classes[:, 0] == classes[:, -1], classes[:, 1], classes[:, 0])
    other = torch.where(other == classes[:, -1], classes[:, 2], other)
    assert (t.class_labels[other] != t.class_labels[classes[:, -1]]).all()
    law = exact_pair_law(t)
    counts = torch.zeros_like(law)
    counts.index_put_((classes[:, -1], other), torch.ones(n, dtype=torch.float64), accumulate=True)
    stderr = (law * (1 - law) / n).sqrt()
    assert ((counts / n - law).abs() <= 5 * stderr + 1e-12).all()
    if fields["zipf_alpha"] == 8.0:  # the second draw given the first: w_j / (W - w_0)
        first0 = classes[:, -1] == 0
        conditional = counts[0, 1:] / counts[0].sum()
        expected = t.class_probs[1:] / t.class_probs[1:].sum()
        assert first0.double().mean() > 0.99
        torch.testing.assert_close(conditional, expected, atol=0.01, rtol=0)


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
        "previous_token_mul",
        "previous_token_abs",
        "induction_mul",
        "induction_abs",
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
    # every row but the first is exactly previous-token; row 0 attends to itself
    assert torch.allclose(values["previous_token_mul"], torch.full((32,), (seq - 1) / seq).double())
    assert torch.allclose(values["previous_token_abs"], torch.full((32,), 1 - 1 / seq).double())
    # layer 2: only the target row puts mass (0.3 each) on matching labels
    torch.testing.assert_close(values["induction_mul"], 0.3 * correct.sum(1).double() / seq)
    expected = 0.3 * correct.sum(1).double()
    torch.testing.assert_close(values["target_to_correct_label_attn"], expected)
    torch.testing.assert_close(values["target_to_labels_attn"], expected)
    assert values["accuracy"].tolist() == [1.0, 0.0] * 16
    assert values["context_label_accuracy"].tolist() == [1.0, 0.0] * 16
    summary = progress_measures(classifier(t), batch, fwd_hooks=hooks).summary
    assert summary["icl_accuracy"] == 0.5 and summary[
        "target_to_correct_label_attn"
    ] == pytest.approx(0.6)


def test_head_scores_equal_transformer_lens_detect_head_on_custom_patterns():
    """The previous-token and induction scores of the progress measures equal TransformerLens's
    `detect_head` given the same detection patterns and the model's own cache, per sequence.
    detect_head reads only ``cfg`` (n_ctx must exceed T), ``to_tokens`` (for the length T) and
    the cache, so a namespace stands in for a tokenizer-backed model."""
    import types

    from transformer_lens import ActivationCache
    from transformer_lens.head_detector import (
        detect_head,
        get_previous_token_head_detection_pattern,
    )

    from interp_icl.analysis.icl_classification import detection_patterns

    t = task(**SMALL)
    model = classifier(t, seed=3)
    batch = t.icl_batch(6, gen(11))
    x = t.model_input(batch.tokens)
    ours = per_sequence_measures(model, batch)
    patterns = detection_patterns(batch.tokens)
    cfg = types.SimpleNamespace(
        n_layers=2, n_heads=1, n_ctx=t.seq_len + 1, device="cpu", dtype=torch.float64
    )
    wrapper = types.SimpleNamespace(
        cfg=cfg, to_tokens=lambda seq: torch.zeros(1, t.seq_len, dtype=torch.long)
    )
    previous = get_previous_token_head_detection_pattern(torch.zeros(1, t.seq_len))
    assert torch.equal(patterns["previous_token"], previous.expand(6, -1, -1))
    # induction: an item or the target (even i) and an earlier label token (odd j) of its label
    labels = batch.tokens[:, :, -1].round().long()
    for b, i, j in torch.cartesian_prod(*(torch.arange(n) for n in (6, t.seq_len, t.seq_len))):
        expected = i % 2 == 0 and j % 2 == 1 and j < i and labels[b, i] == labels[b, j]
        assert patterns["induction"][b, i, j] == float(expected)
    assert patterns["induction"][:, -1].sum(1).eq(2).all()  # the target: its B = 2 labels
    for b in range(6):
        _, activations = model.run_with_cache(x[b : b + 1], remove_batch_dim=True)
        cache = ActivationCache(activations, model, has_batch_dim=False)
        for measure, tolerance in (("mul", 1e-6), ("abs", 5e-4 + 1e-6)):  # TL rounds "abs"
            for layer, name in ((0, "previous_token"), (1, "induction")):
                scores = detect_head(
                    wrapper, None, patterns[name][b], cache=cache, error_measure=measure
                )
                assert float(scores[layer, 0]) == pytest.approx(
                    float(ours[f"{name}_{measure}"][b]), abs=tolerance
                )


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
    from interp_icl.runs import rundir
    from interp_icl.runs import load_run
    from interp_icl.runs import create_run, resume_run

    cfg = run_config()
    assert cfg.model.n_labels == 8  # filled in from the task
    full = create_run(cfg, tmp_path / "full", progress=False).run()
    for key in ("eval_loss", "icl_accuracy", "iwl_accuracy", "context_label_accuracy"):
        assert key in full.final
    assert full.final["loss_minus_bayes"] == pytest.approx(
        full.final["eval_loss"] - full.final["bayes_loss"]
    )
    assert full.final["uniform_loss"] == pytest.approx(math.log(8))
    create_run(cfg, tmp_path / "cut", progress=False).run(stop_after=17)
    resumed = resume_run(tmp_path / "cut", progress=False)
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
    assert len(frame) == 2 * 10 and set(frame["step"]) == {0, 30}  # 10 metrics per step


@pytest.mark.parametrize(
    "task_fields,model_fields,message",
    [
        ({"name": "classification"}, {"family": "standard"}, "needs model.family 'classifier'"),
        ({"name": "markov"}, {"family": "classifier", "n_heads": 1}, "cannot learn task 'markov'"),
        ({"name": "regression"}, {"family": "classifier", "n_heads": 1}, "cannot learn task"),
        ({"name": "classification"}, {"family": "classifier", "n_heads": 2}, "set model.n_heads 1"),
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


def test_crossing_steps_of_a_logistic_rise_and_fall():
    """A logistic rise from p to 1 centred at t0 with width w covers the fraction f of the way at
    t0 + w log(f / (1 - f)) exactly; the first sampled step at or after it is returned."""
    import pandas as pd

    from interp_icl.curves import crossing_steps

    steps = torch.arange(0, 2001, 10, dtype=torch.float64)
    p, t0, w = 0.25, 800.0, 40.0
    rise = pd.Series((p + (1 - p) * torch.sigmoid((steps - t0) / w)).numpy(), index=steps.long().numpy())
    found = crossing_steps(rise, p, 1.0, (0.1, 0.5, 0.9))
    for f, step in found.items():
        exact = t0 + w * math.log(f / (1 - f))
        assert step == 10 * math.ceil(exact / 10 - 1e-9)
    fall = 3.0 - 2.0 * (rise - p) / (1 - p)  # from 3 down to 1
    assert crossing_steps(fall, 3.0, 1.0, (0.5,)) == {0.5: 800}
    assert crossing_steps(rise, p, 2.0, (0.9,)) == {0.9: None}  # never gets there
    assert crossing_steps(rise, 1.0, 1.0) == {0.1: None, 0.5: None, 0.9: None}


def load_study():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "analyses" / "abrupt_learning.py"
    spec = importlib.util.spec_from_file_location("abrupt_learning_study", path)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_study_arms_l_equals_n_gives_no_context_label_advantage():
    """The study's L = N arm: every context holds all L labels, so "pick a context label" is
    chance (1/L); its control and the main arm keep L = 32 labels, N/B of them in a context."""
    study = load_study()
    equal = study.arm_config("L = N", 1, 500)
    assert (equal.task.n_labels, equal.task.n_pairs, equal.task.burstiness) == (8, 8, 1)
    assert equal.model.n_labels == 8 and equal.seed == 1 and equal.train.steps == 500
    t = make_task(equal.task)
    labels = t.context_labels(t.sample(512, gen(9)).tokens)
    assert torch.equal(labels.sort(dim=1).values, torch.arange(8).expand(512, -1))
    for arm, groups in (("main", 4), ("L > N control", 8)):
        config = study.arm_config(arm, 0, 500)
        assert config.task.n_labels == 32 and config.task.n_classes == 2**14
        t = make_task(config.task)
        labels = t.context_labels(t.sample(256, gen(10)).tokens)
        assert all(len(set(row.tolist())) == groups for row in labels)


def test_study_sweep_cells_are_the_arms():
    """The committed sweep trains exactly the arms `arm_config` describes (apart from the run
    name), and `arm_of` reads each cell's arm back."""
    import json
    from pathlib import Path

    from interp_icl.sweeps.spec import SweepSpec

    study = load_study()
    path = Path(__file__).parents[1] / "analyses" / "sweeps" / "abrupt_learning.json"
    cells = SweepSpec.from_dict(json.loads(path.read_text())).cells()
    assert len(cells) == 9
    for cell in cells:
        arm = study.arm_of(cell.config)
        expected = study.arm_config(arm, cell.config.seed, 2000).to_dict()
        assert {**cell.config.to_dict(), "name": None} == {**expected, "name": None}
    assert [study.arm_of(c.config) for c in cells[::3]] == list(study.ARMS)


def test_study_network_learns_abruptly_after_a_slow_phase(tmp_path):
    """The study's main arm, one seed, shortened to 1000 steps (evaluations every 50 steps on 256
    sequences, checkpoints every 100; the training batches are those of the study's run): the
    ICL accuracy sits near the slow-phase level B/N = 1/4 (a random pick among the 4 context
    labels; context-label accuracy already high), then rises to >= 0.9 in fewer steps than half
    of the slow phase, and the layer-1 label->item attention jumps with the loss."""
    study = load_study()
    base = study.arm_config("main", 0, 1000).to_dict()
    base["train"].update(eval_every=50, n_eval=256, checkpoint_every=100)
    run = tmp_path / "main-s0"
    open_run(RunConfig.from_dict(base), run, resume=False).run()
    summary, curves, progress = study.run_summary(run)
    plateau = curves[(curves.step >= 300) & (curves.step <= 500)]
    assert plateau.icl_accuracy.between(0.15, 0.35).all()  # the slow phase, chance is 1/32
    assert plateau.context_label_accuracy.mean() > 0.8
    assert summary["learned"] and summary["final_icl_accuracy"] >= 0.9
    assert summary["abrupt"] and summary["rise_steps"] <= 0.5 * summary["t10"]
    assert summary["context_label_first"] and summary["label_to_item_attn_with_loss"]
    assert set(progress.metric) >= set(study.ATTENTION_MEASURES)
