"""Training runs: the run directory, determinism, resuming, staged training, checkpoint errors."""

import json

import pytest
import torch
from safetensors.torch import save_file

from interp_icl import load_run
from interp_icl.errors import CheckpointError, ConfigError
from interp_icl.runs import rundir
from interp_icl.runs import create_run, resume_run
from interp_icl.training.trainer import checkpoint_steps


def _comparable(rows):
    return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in rows]


def test_run_directory_layout_and_contents(tmp_path, tiny):
    run_dir = tmp_path / "tiny"
    result = create_run(tiny(), run_dir, progress=False).run()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["task"]["parents"] == [1] and config["model"]["family"] == "standard"
    assert config["versions"]["torch"] == torch.__version__.split("+")[0] or config["versions"]["torch"].startswith(
        torch.__version__.split("+")[0]
    )
    assert "transformer-lens" in config["versions"] and "python" in config["versions"]
    assert rundir.list_checkpoints(run_dir) == sorted(checkpoint_steps(40, 20))
    rows = rundir.read_metrics(run_dir)
    assert [r["step"] for r in rows] == sorted({0, 10, 20, 30, 40} | checkpoint_steps(40, 20))
    for key in ("eval_loss", "bayes_loss", "unigram_loss", "sgram_parents_loss", "eval_loss_last"):
        assert key in result.final
    # the evaluation set is fixed: oracle losses are the same in every row
    assert len({r["bayes_loss"] for r in rows}) == 1
    assert result.final["eval_loss"] < rows[0]["eval_loss"]  # it learned something


def test_same_config_and_seed_give_identical_runs(tmp_path, tiny):
    a = create_run(tiny(), tmp_path / "a", progress=False).run()
    b = create_run(tiny(), tmp_path / "b", progress=False).run()
    assert _comparable(rundir.read_metrics(a.run_dir)) == _comparable(rundir.read_metrics(b.run_dir))
    c = create_run(tiny(seed=2), tmp_path / "c", progress=False).run()
    assert c.final["eval_loss"] != a.final["eval_loss"]


@pytest.mark.parametrize("data", ["online", "fixed"])
def test_resume_ends_exactly_where_an_uninterrupted_run_ends(tmp_path, tiny, data):
    cfg = tiny(train={"data": data, "n_train": 40})
    full = create_run(cfg, tmp_path / "full", progress=False).run()
    create_run(cfg, tmp_path / "cut", progress=False).run(stop_after=27)  # last checkpoint: 24
    resumed = resume_run(tmp_path / "cut", progress=False)
    assert resumed.step == 24
    resumed.run()
    assert _comparable(rundir.read_metrics(tmp_path / "cut")) == _comparable(rundir.read_metrics(full.run_dir))
    a, b = load_run(full.run_dir), load_run(tmp_path / "cut")
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k


def test_staged_gih_training_moves_only_the_stage_groups(tmp_path):
    from tests.conftest import tiny_config

    cfg = tiny_config(
        model={"family": "gih", "n_heads": 2, "window": 2, "max_degree": 2},
        train={
            "optimizer": "sgd",
            "lr": 1.0,
            "checkpoint_every": 5,
            "loss_positions": "last",
            "stages": [
                {"groups": ["ffn"], "steps": 5},
                {"groups": ["rpe"], "steps": 5, "lr": 10.0},
                {"groups": ["a"], "steps": 5},
            ],
        },
    )
    create_run(cfg, tmp_path / "staged", progress=False).run()
    params = {s: load_run(tmp_path / "staged", step=s).model.param_groups() for s in (0, 5, 10, 15)}
    changed = lambda s0, s1, g: not torch.equal(params[s0][g][0], params[s1][g][0])  # noqa: E731
    assert [changed(0, 5, g) for g in ("ffn", "rpe", "a")] == [True, False, False]
    assert [changed(5, 10, g) for g in ("ffn", "rpe", "a")] == [False, True, False]
    assert [changed(10, 15, g) for g in ("ffn", "rpe", "a")] == [False, False, True]


def test_existing_run_is_not_overwritten_without_force(tmp_path, tiny):
    run_dir = tmp_path / "tiny"
    create_run(tiny(train={"steps": 4}), run_dir, progress=False).run()
    before = (run_dir / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match="already exists; pass --force"):
        create_run(tiny(train={"steps": 4}), run_dir, progress=False)
    assert (run_dir / "metrics.jsonl").read_text() == before
    create_run(tiny(train={"steps": 2}), run_dir, force=True, progress=False).run()
    assert rundir.read_metrics(run_dir)[-1]["step"] == 2


def test_broken_checkpoints_give_one_line_errors(tmp_path, tiny):
    run_dir = tmp_path / "tiny"
    create_run(tiny(train={"steps": 4}), run_dir, progress=False).run()
    path = rundir.checkpoint_path(run_dir, 4)
    data = path.read_bytes()

    path.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(CheckpointError, match="unreadable") as info:
        load_run(run_dir)
    assert "\n" not in str(info.value)

    save_file({"weight": torch.zeros(3)}, str(path))  # a foreign safetensors file
    with pytest.raises(CheckpointError, match="not an interp_icl checkpoint"):
        load_run(run_dir)

    path.write_bytes(data)
    config = json.loads((run_dir / "config.json").read_text())
    config["model"]["d_model"] = 32  # config no longer matches the weights
    (run_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="does not match the run's config"):
        load_run(run_dir)
    with pytest.raises(CheckpointError, match="no checkpoint at step 5"):
        load_run(run_dir, step=5)


def test_floored_fraction_counts_gih_targets_absent_from_the_context(tmp_path):
    """The gih output mixes context tokens, so exactly the targets never seen before get p = 0."""
    from tests.conftest import tiny_config

    cfg = tiny_config(
        task={"vocab_size": 5, "alpha": 0.1, "seq_len": 12},
        model={"family": "gih", "n_heads": 2, "window": 2, "max_degree": 2},
        train={"steps": 2, "optimizer": "sgd", "lr": 1.0, "n_eval": 64},
    )
    trainer = create_run(cfg, tmp_path / "gih", progress=False)
    row = trainer.evaluate()
    tokens = trainer.eval_batch.tokens
    earlier = torch.stack(
        [(tokens[:, :t] == tokens[:, t : t + 1]).any(1) for t in range(1, tokens.shape[1])], dim=1
    )
    unseen = ~earlier  # [n_eval, T - 1]: target t >= 1 absent from tokens < t
    assert 0 < float(unseen.double().mean()) < 1
    assert row["eval_floored_frac"] == pytest.approx(float(unseen.double().mean()), abs=1e-12)
    assert row["eval_floored_frac_last"] == pytest.approx(float(unseen[:, -1].double().mean()), abs=1e-12)
