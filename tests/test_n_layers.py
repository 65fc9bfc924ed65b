"""Standard models of 1, 2 and 3 layers through the analysis passes and the role experiments.

The copier pass covers every layer before the last, the selector and classifier the last layer;
a 1-layer model has no copier -> classifier circuit, which the passes and the role experiments say
plainly instead of failing. Models are random (the structure of the results is under test here;
the numbers of a 2-layer model are pinned by test_analysis.py / test_roles.py).
"""

import pytest
import torch

from interp_icl.analysis.pipeline import AnalysisSettings, analyze_model
from interp_icl.errors import ConfigError
from interp_icl.models import layout
from interp_icl.models.layout import NO_CIRCUIT
from interp_icl.models.standard import build_standard
from interp_icl.roles import role_experiments
from interp_icl.tasks import make_task
from tests.conftest import tiny_config

N_CTX = 24
CIRCUIT = ("copier", "selector", "classifier")


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    task = make_task(config.task)
    tokens = task.sample(8, torch.Generator().manual_seed(2)).tokens
    return config, task, tokens


def model_of(config, task, n_layers):
    model_config = config.model.updated(n_layers=n_layers)
    return build_standard(model_config, task.vocab_size, N_CTX, seed=0).eval()


def test_depth_is_built_and_checked(setup):
    config, task, _ = setup
    assert build_standard(config.model, 3, N_CTX, 0).cfg.n_layers == 2  # the default depth
    for n in (1, 2, 3):
        shape = layout(model_of(config, task, n))
        assert shape.n_layers == n and shape.copier_layers == tuple(range(n - 1))
    for n in (0, 4):
        with pytest.raises(ConfigError, match="model.n_layers"):
            tiny_config(model={"n_layers": n})


def test_one_layer_model_says_no_circuit_exists(setup):
    config, task, tokens = setup
    model = model_of(config, task, 1)
    analysis = analyze_model(model, task, AnalysisSettings(n_sequences=16, n_kernels=20))
    for name in CIRCUIT:
        assert analysis.results[name].summary == {"skipped": NO_CIRCUIT}
        assert analysis.results[name].table.empty
    assert analysis.headline()["skipped"] == {name: NO_CIRCUIT for name in CIRCUIT}
    assert set(analysis.results["head_scores"].summary["heads"]) == {"L0H0", "L0H1"}
    assert "theory" in analysis.results and set(analysis.table()["pass"]) == {"head_scores", "theory"}
    roles = role_experiments(model, tokens, task.parents, task.alpha)
    for name in CIRCUIT:
        assert roles[name].holds is None and roles[name].checks == []
        assert roles[name].not_applicable == NO_CIRCUIT
        assert roles[name].table.empty


def test_three_layer_model_copies_in_layers_0_and_1_and_compares_in_layer_2(setup):
    config, task, tokens = setup
    model = model_of(config, task, 3)
    analysis = analyze_model(model, task, AnalysisSettings(n_sequences=16, n_kernels=20))
    copier = analysis.results["copier"]
    assert copier.summary["layer"] == [0, 1]
    assert set(copier.summary["heads"]) == {"L0H0", "L0H1", "L1H0", "L1H1"}
    assert {h["layer"] for h in copier.summary["heads"].values()} == {0, 1}
    assert set(copier.table["layer"]) == {0, 1}
    selector = analysis.results["selector"].summary
    assert selector["layer"] == 2 and set(selector["units"]) == {"L2H0 q/k", "L2H1 q/k", "resid_pre L2"}
    classifier = analysis.results["classifier"].summary
    assert classifier["layer"] == 2 and set(classifier["heads"]) == {"L2H0", "L2H1"}
    scores = analysis.results["head_scores"]
    assert {"L0H1->L2H0", "L1H1->L2H0", "L0H0->L1H1"} <= set(scores.table["unit"])
    roles = role_experiments(model, tokens, task.parents, task.alpha)
    # every copier-layer head is in a set or measured as a possible other head
    copier = roles["copier"].table
    measured = set(copier.loc[copier["metric"] == "mean_ablation_effect", "unit"])
    in_sets = {u for units in roles["copier"].details["sets"].values() for u in units}
    assert measured | in_sets == {"L0H0", "L0H1", "L1H0", "L1H1"}
    assert set(roles["classifier"].details["match_selectivity"]) == {"L2H0", "L2H1"}
    assert set(roles["selector"].details["heads"]) <= {"L2H0", "L2H1"}
    assert all(isinstance(r.holds, bool) for r in roles.values())


def test_two_layer_model_keeps_its_layer_names(setup):
    config, task, tokens = setup
    model = model_of(config, task, 2)
    analysis = analyze_model(model, task, AnalysisSettings(n_sequences=16, n_kernels=20))
    assert analysis.results["copier"].summary["layer"] == 0
    assert "layer" not in analysis.results["copier"].summary["heads"]["L0H0"]
    assert analysis.results["classifier"].summary["layer"] == 1
    roles = role_experiments(model, tokens, task.parents, task.alpha)
    assert set(roles["classifier"].details["match_selectivity"]) == {"L1H0", "L1H1"}
    assert {c.name for c in roles["copier"].checks} == {"parent_1_key"}  # parent 1's query side is the residual
