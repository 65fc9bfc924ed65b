"""analyses/data_dependence.py: the ICL-onset and threshold functions on synthetic curves, the
committed specs' design (one factor at a time, two seeds or more), and the --quick mode's
mechanics (never its scientific answer: that is docs/data_dependence.md)."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

from interp_icl.errors import ConfigError

ANALYSES = Path(__file__).parents[1] / "analyses"


def load_script():
    spec = importlib.util.spec_from_file_location("data_dependence_study", ANALYSES / "data_dependence.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


study = load_script()


def curve(values, every=50):
    return pd.Series(values, index=[every * i for i in range(len(values))], dtype=float)


def test_onset_is_the_first_smoothed_crossing():
    # plateau at B/N = 0.25, then an abrupt rise: the first evaluation >= 0.625 is at index 5
    acc = curve([0.03, 0.2, 0.25, 0.24, 0.26, 0.7, 0.9, 0.95, 0.97])
    assert study.onset_step(acc, 0.625) == 250
    # a one-evaluation spike is removed by the median of 3
    spiky = curve([0.03, 0.25, 0.9, 0.25, 0.26, 0.25, 0.8, 0.9, 0.95])
    assert study.onset_step(spiky, 0.625) == 300
    # the last evaluation alone is smoothed with its one neighbour (median of two = their mean)
    late = curve([0.2, 0.2, 0.2, 0.5, 0.8])
    assert study.onset_step(late, 0.625) == 200  # median(0.5, 0.8) = 0.65
    assert study.onset_step(curve([0.2, 0.2, 0.2, 0.2, 0.9]), 0.625) is None  # mean 0.55


def test_onset_none_when_never_reached_and_order_by_step():
    assert study.onset_step(curve([0.25] * 10), 0.625) is None
    assert study.onset_step(pd.Series([], dtype=float), 0.5) is None
    assert study.onset_step(curve([math.nan, 0.9, 0.9]), 0.5) == 50  # missing evaluations dropped
    shuffled = pd.Series([0.9, 0.1, 0.9, 0.9], index=[150, 0, 100, 50], dtype=float)
    assert study.onset_step(shuffled, 0.6) == 50  # sorted first: 0.1, 0.9, 0.9, 0.9 (step 0: 0.5)


def test_thresholds_sit_halfway_above_the_context_label_plateau():
    assert study.icl_threshold(32, 8, 2) == pytest.approx((0.25 + 1) / 2)
    assert study.icl_threshold(32, 8, 4) == pytest.approx(0.75)  # B/N = 0.5
    assert study.icl_threshold(32, 8, 1) == pytest.approx((1 / 8 + 1) / 2)
    assert study.icl_threshold(64, 2, 1) == pytest.approx(0.75)  # B/N = 0.5 > 1/L
    assert study.icl_threshold(8, 16, 1) == pytest.approx((1 / 8 + 1) / 2)  # 1/L > B/N
    assert study.iwl_threshold(32) == pytest.approx((1 / 32 + 1) / 2)
    with pytest.raises(ConfigError):
        study.iwl_threshold(1)


def test_favours_needs_a_difference_beyond_two_standard_errors():
    def row(mean, stderr):
        return pd.Series({"x_mean": mean, "x_stderr": stderr})

    assert study.favours(row(0.9, 0.01), row(0.1, 0.01), "x") is True
    assert study.favours(row(0.1, 0.01), row(0.9, 0.01), "x") is False
    assert study.favours(row(0.5, 0.1), row(0.4, 0.1), "x") is None  # 0.1 < 2·0.141
    assert study.favours(row(0.5, math.nan), row(0.4, math.nan), "x") is True  # one seed: stderr 0


def test_factor_of_names_the_one_factor_a_setting_varies():
    base = dict(study.BASE)
    assert study.factor_of(base) == "base"
    assert study.factor_of({**base, "task.n_classes": 32}) == "classes"
    assert study.factor_of({**base, "task.p_bursty": 0.0}) == "burstiness"
    assert study.factor_of({**base, "task.burstiness": 4}) == "burstiness"
    assert study.short_label({**base, "task.zipf_alpha": 1.0}) == "α = 1"
    with pytest.raises(ConfigError):
        study.factor_of({**base, "task.n_classes": 32, "task.epsilon": 0.5})


def test_committed_specs_vary_one_factor_at_a_time_with_two_seeds():
    grid = json.loads((ANALYSES / "sweeps" / "data_dependence.json").read_text())
    zipped = grid["zip"][0]
    assert set(zipped) == set(study.FACTOR_KEYS) and len(grid["seeds"]) >= 2
    n = len(grid["axes"][zipped[0]])
    settings = [{key: grid["axes"][key][i] for key in zipped} for i in range(n)]
    factors = [study.factor_of(s) for s in settings]
    assert factors.count("base") == 1 and set(factors) == {"base", *study.FACTORS}
    assert len({json.dumps(s, sort_keys=True) for s in settings}) == n  # no setting twice
    k512 = json.loads((ANALYSES / "sweeps" / "data_dependence_k512.json").read_text())
    assert k512["base"] == {"preset": "abrupt-learning"} and k512["axes"]["task.n_classes"] == [512]
    assert len(k512["seeds"]) >= 2 and set(k512["axes"]) <= {"task.n_classes", "train.checkpoint_every"}


def test_committed_specs_build_every_cell_config():
    from interp_icl.presets import abrupt_learning
    from interp_icl.sweeps.spec import SweepSpec

    grid = SweepSpec.from_file(ANALYSES / "sweeps" / "data_dependence.json").cells()
    assert len(grid) == 22
    for cell in grid:
        model, train = cell.config.model, cell.config.train
        assert (model.d_model, model.d_head, model.d_mlp) == (64, 64, 64)
        assert (train.steps, train.optimizer, train.lr, train.eval_every) == (3000, "adam", 1e-3, 50)
    preset = abrupt_learning()
    for cell in SweepSpec.from_file(ANALYSES / "sweeps" / "data_dependence_k512.json").cells():
        assert cell.config.task == preset.task.updated(n_classes=512)
        assert cell.config.model == preset.model
        assert cell.config.train.updated(checkpoint_every=preset.train.checkpoint_every) == preset.train


def test_quick_mode_measures_every_cell(tmp_path, local_ray):
    summary = study.main(["--quick", "--out", str(tmp_path)])
    grid = pd.read_csv(tmp_path / "grid" / "sweep" / "results.csv")
    assert len(grid) == study.QUICK_SETTINGS and set(grid["status"]) == {"done"}
    assert json.loads((tmp_path / "grid" / "spec.json").read_text())["seeds"] == [0]
    cells = pd.DataFrame(summary["grid_cells"])
    assert len(cells) == study.QUICK_SETTINGS and list(cells["factor"]) == ["base", "burstiness"]
    assert cells["final_icl_accuracy"].between(0, 1).all() and cells["final_iwl_accuracy"].between(0, 1).all()
    assert (cells["steps"] == study.QUICK["train.steps"]).all()
    assert cells["icl_threshold"].tolist() == [pytest.approx(0.625)] * 2
    settings = pd.DataFrame(summary["settings"])
    assert len(settings) == study.QUICK_SETTINGS and (settings["seeds"] == 1).all()
    assert settings["icl_learned_low"].between(0, 1).all() and settings["icl_learned_high"].between(0, 1).all()
    claims = pd.DataFrame(summary["claims"])
    assert claims["claim (paper)"].tolist() == ["bursty contexts favour ICL"]
    k512 = pd.read_csv(tmp_path / "k512" / "sweep" / "results.csv")
    assert len(k512) == 1 and k512["status"].iloc[0] == "done" and k512["task.n_classes"].iloc[0] == 512
    assert len(summary["k512"]) == 1 and summary["k512_verdict"]["memorises_first"].endswith("of 1")
    page = (tmp_path / "data_dependence.html").read_text()
    assert page.count("<section") == 6
    assert json.loads((tmp_path / "data_dependence.json").read_text())["quick"] is True


def test_claims_table_on_synthetic_cells_of_the_whole_grid():
    """Every claim row from made-up per-cell numbers of the committed grid (two seeds each):
    ICL rises with B, K and falls with α; IWL the other way; α = 1 has both above threshold."""
    grid = json.loads((ANALYSES / "sweeps" / "data_dependence.json").read_text())
    zipped = grid["zip"][0]
    rows = []
    for i in range(len(grid["axes"][zipped[0]])):
        setting = {key: grid["axes"][key][i] for key in zipped}
        bursty = setting["task.p_bursty"] * setting["task.burstiness"]  # 0, 1, 2, 4
        icl = 0.2 + 0.15 * bursty + 0.02 * math.log2(setting["task.n_classes"]) - 0.2 * setting["task.zipf_alpha"]
        iwl = 0.9 - 0.05 * math.log2(setting["task.n_classes"]) + 0.3 * setting["task.zipf_alpha"]
        for seed, noise in ((0, -0.01), (1, 0.01)):
            rows.append({**setting, "seed": seed, "factor": study.factor_of(setting),
                         "label": study.setting_label(setting), "short": study.short_label(setting),
                         "final_icl_accuracy": icl + noise, "final_iwl_accuracy": iwl + noise,
                         "final_train_accuracy": 0.9, "icl_onset": 1000 if icl > 0.6 else None,
                         "iwl_onset": None, "icl_learned": icl > 0.6, "iwl_learned": iwl > 0.5,
                         "memorises_first": False, "icl_threshold": 0.6, "iwl_threshold": 0.5})
    cells = pd.DataFrame(rows)
    settings = study.with_setting_columns(study.setting_table(cells), cells)
    assert len(settings) == 11 and (settings["seeds"] == 2).all()
    assert settings["final_icl_accuracy_stderr"].round(6).eq(0.01).all()
    assert settings.loc[settings["short"] == "base", "icl_onset_n"].item() == 2
    claims = study.claims_table(settings).set_index("claim (paper)")["holds"]
    assert claims["bursty contexts favour ICL"] is True
    assert claims["many classes favour ICL"] is True
    assert claims["few classes favour in-weights learning"] is True
    assert claims["many rare classes (flat frequencies) favour ICL"] is True
    assert claims["a skewed (Zipf) class distribution favours in-weights learning"] is True
    # α = 1: ICL 0.2 + 0.3 + 0.28 - 0.2 = 0.58 < 0.6, so the coexistence claim does not hold
    assert claims["a Zipf exponent near 1 lets ICL and in-weights learning coexist"] is False
    assert len(claims) == 8 and claims.iloc[-2:].isna().all()  # the two ε rows are reported only
    ladder = study.ladder(settings, "burstiness")["short"].tolist()
    assert ladder == ["p_bursty = 0", "B = 1", "base", "B = 4"]
