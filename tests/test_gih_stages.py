"""The gih stage-wise dynamics study (analyses/gih_stages.py) in its quick mode: mechanics only
(cells, fit tables, the joint arm's order, the report and JSON), never the scientific answer."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd


def load_study():
    path = Path(__file__).parents[1] / "analyses" / "gih_stages.py"
    spec = importlib.util.spec_from_file_location("gih_stages_study", path)
    script = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = script  # the script's dataclass looks its module up
    spec.loader.exec_module(script)
    return script


def r2_ok(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or 0.0 <= value <= 1.0


def test_linear_fit_recovers_a_line_and_gives_nan_when_undetermined():
    study = load_study()
    x = np.arange(5.0)
    slope, intercept, r2 = study.linear_fit(x, 2.0 + 0.5 * x)
    assert math.isclose(slope, 0.5) and math.isclose(intercept, 2.0) and math.isclose(r2, 1.0)
    assert math.isnan(study.linear_fit(x[:2], x[:2])[2])
    assert math.isnan(study.linear_fit(x, np.ones(5))[2])


def test_order_text_sorts_roles_by_half_rise_and_marks_ties():
    study = load_study()
    assert study.order_text({"selector": 3, "copier": 10, "classifier": 7}) == "selector<classifier<copier"
    assert study.order_text({"selector": 3, "copier": 3, "classifier": None}) == "selector=copier"
    assert study.order_text({"selector": None, "copier": None, "classifier": None}) is None


def test_quick_study_runs_both_arms_and_writes_fits_order_page_and_json(tmp_path, local_ray):
    study = load_study()
    summary = study.main(["--quick", "--out", str(tmp_path), "--workers", "1"])

    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == 3 and set(results["status"]) == {"done"}
    assert summary["n_runs"] == 3 and sorted(summary["cells"]) == sorted(results["cell"])

    assert summary["stage1"] and summary["stage1_runner_up"] and summary["stage3"]
    for row in summary["stage1"] + summary["stage3"]:
        assert r2_ok(row["R²"])
    assert len(summary["stage1_runner_up"]) == 2  # one per staged arm
    assert {row["head"] for row in summary["stage2"]}  # the S* heads' copier rows
    assert len(summary["offsets"]) == 7  # 3 stages of each staged arm + the joint arm

    (joint,) = summary["joint"]
    assert "order" in joint and "paper order" in joint
    assert {"half-rise selector", "half-rise copier", "half-rise classifier"} <= set(joint)

    assert (tmp_path / "gih_stages.html").is_file()
    written = json.loads((tmp_path / "gih_stages.json").read_text())
    assert written["quick"] is True and written["n_runs"] == 3
    assert (tmp_path / "gih_stages_data").is_dir()
