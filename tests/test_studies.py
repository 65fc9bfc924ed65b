"""The population studies of analyses/ in their --quick modes: their mechanics (cells run through
`interp-icl sweep`, every measurement, verdict and fit reported, the page written), never their
scientific answer (that is for the full runs, docs/selection_phase_diagram.md and
docs/standard_gih.md)."""

import importlib.util
import json
import math
from pathlib import Path

import pandas as pd
import pytest

ANALYSES = Path(__file__).parents[1] / "analyses"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_study", ANALYSES / f"{name}.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


# the studies' sweeps run on the session's local 2-CPU Ray instance (tests/conftest.py)
pytestmark = pytest.mark.usefixtures("local_ray")


def test_selection_phase_diagram_quick_mode_measures_every_cell(tmp_path):
    script = load_script("selection_phase_diagram")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    committed = json.loads((ANALYSES / "sweeps" / "selection_phase_diagram.json").read_text())
    n_settings = script.QUICK_SETTINGS * len(committed["axes"]["model.rpe_noise"])  # x inits, 1 seed
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == n_settings and set(results["status"]) == {"done"}
    assert json.loads((tmp_path / "spec.json").read_text())["seeds"] == [0]
    assert summary["n_runs"] == n_settings and len(summary["agreement"]) == n_settings
    theory = pd.DataFrame(summary["theory"])
    assert len(theory) == script.QUICK_SETTINGS
    for criterion in ("chi2_mi", "modified_chi2_mi"):
        assert theory[f"{criterion}.S*"].str.match(r"^\{[\d,]+\}$").all()
        assert (theory[f"{criterion}.stderr"] > 0).all() and (theory[f"{criterion}.gap"] >= 0).all()
    runs = pd.read_csv(tmp_path / "selection_phase_diagram_data" / "runs.csv")
    assert len(runs) == n_settings and set(runs["init"]) == {"reference", "non-aligned"}
    assert runs["p_top"].between(0, 1).all() and runs["loss_bayes"].gt(0).all()
    assert runs["trained_S*"].str.match(r"^(\{[\d,]+\}|∅)$").all()
    verdicts = pd.DataFrame(summary["verdicts"])
    assert len(verdicts) == 6  # 2 criteria x (exactly, within ties, concentrated runs only)
    every_run = verdicts[~verdicts["counting"].str.contains("p_top")]
    assert len(every_run) == 4 and every_run["runs predicted"].str.endswith(f"of {n_settings}").all()
    assert (tmp_path / "selection_phase_diagram.html").read_text().count("<section") == 6  # search, theory, trained, rates, verdicts, runs


def test_standard_gih_quick_mode_runs_the_checks_on_trained_and_untrained_models(tmp_path):
    script = load_script("standard_gih")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert sorted(results["model.n_layers"]) == [1, 2] and set(results["status"]) == {"done"}
    two = results[results["model.n_layers"] == 2].iloc[0]
    for column in ("role.copier", "role.selector", "role.classifier"):  # decided on a 2-layer model
        assert not pd.isna(two[column]), column
    for column in ("role.classifier.fitted_recovery", "role.classifier.fitted_recovery.measured",
                   "role.selector.query_reads_only_parents", "dynamics.order",
                   "dynamics.half_rise.copier"):  # may be undetermined after 40 steps
        assert column in results.columns, column
    assert pd.isna(results.loc[results["model.n_layers"] == 1, "role.copier"]).all()  # no circuit
    assert not [c for c in results.columns if c.startswith("theory_")]  # analysis.passes leaves it out
    untrained = pd.read_csv(tmp_path / "results" / "untrained.csv")
    assert {"role.copier", "role.selector.query_reads_only_parents", "role.classifier.has_heads"} <= set(untrained["check"])
    assert set(untrained["cell"]) == set(results.loc[results["model.n_layers"] == 2, "cell"])
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    assert len(runs) == 2 and {"learned", "failed checks", "other heads that matter", "hypothesis.low"} <= set(runs.columns)
    fragment = (tmp_path / "standard_gih.md").read_text(encoding="utf-8")
    assert fragment == script._study.fragment_text(script.fragment(script._study.read_tables(tmp_path / "results", script.TABLES)), script.COMMAND)
    assert "untrained models passing" in fragment and "| {1,2}, d = 3 | 0 |" in fragment  # seed 0's row
    assert summary["fragment"] == str(tmp_path / "standard_gih.md")
    assert (tmp_path / "standard_gih.html").exists() and (tmp_path / "standard_gih_data" / "untrained_checks.csv").exists()


@pytest.mark.parametrize("name, page", [("standard_gih", "standard_gih.md"), ("quickstart_circuits", "patching.md")])
def test_committed_fragment_is_built_from_the_committed_results(name, page):
    """A docs page quotes a study's numbers from docs/generated/<name>.md, which
    `python analyses/<name>.py` writes from analyses/results/<name>/*.csv."""
    script = load_script(name)
    folder, path = script._study.results_paths(name, quick=False, out=Path("unused"))
    rebuilt = script._study.fragment_text(script.fragment(script._study.read_tables(folder, script.TABLES)), script.COMMAND)
    assert path.read_text(encoding="utf-8") == rebuilt, f"docs/generated/{name}.md is stale: run python analyses/{name}.py"
    assert f'--8<-- "docs/generated/{name}.md"' in (ANALYSES.parent / "docs" / page).read_text(encoding="utf-8")


def test_the_committed_quickstart_circuits_are_seeds_0_to_9():
    runs = pd.read_csv(ANALYSES / "results" / "quickstart_circuits" / "runs.csv")
    assert sorted(runs["seed"]) == list(range(10))  # the acceptance population


def test_quickstart_circuits_quick_mode_reads_every_cells_stored_circuit(tmp_path):
    from interp_icl.runs.circuits import stored_circuits

    script = load_script("quickstart_circuits")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == 1 and set(results["status"]) == {"done"} and summary["n_runs"] == 1
    runs = pd.read_csv(tmp_path / "results" / "runs.csv")
    (circuit,) = stored_circuits(tmp_path / "sweep" / "runs" / results["cell"][0], 20)
    assert runs["circuit edges"][0] == circuit.circuit_size == results["circuit.edges_needed"][0]
    added = runs[["added through an MLP", "added from or to an unnamed head", "added between named heads"]]
    assert added.sum(axis=1)[0] == runs["added"][0] == len(circuit.added)
    types = pd.read_csv(tmp_path / "results" / "types.csv")
    assert list(types["type"]) == list(circuit.hypothesis["types"])
    fragment = (tmp_path / "quickstart_circuits.md").read_text(encoding="utf-8")
    rebuilt = script.fragment(script._study.read_tables(tmp_path / "results", script.TABLES))
    assert fragment == script._study.fragment_text(rebuilt, script.COMMAND)
    assert (tmp_path / "quickstart_circuits.html").exists()


def test_added_edges_are_sorted_by_where_they_run():
    script = load_script("quickstart_circuits")
    named = {"L0H1", "L1H0"}
    assert script.added_kind("L0H1->MLP0.in", named) == "through an MLP"
    assert script.added_kind("embed->L0H3.q", named) == "from or to an unnamed head"
    assert script.added_kind("L0H1->L1H0.v", named) == "between named heads"


def test_implicit_update_sweep_cells_are_the_two_presets():
    """The committed spec's zipped axes make setting 0 the `implicit-update` preset and setting 1
    the `implicit-update-source` preset exactly, apart from seed and name."""
    from interp_icl.presets import PRESETS
    from interp_icl.sweeps.spec import SweepSpec

    spec = SweepSpec.from_file(ANALYSES / "sweeps" / "implicit_update.json")
    presets = [PRESETS["implicit-update"](), PRESETS["implicit-update-source"]()]
    cells = spec.cells()
    assert len(cells) == 6 and spec.seeds == [0, 1, 2] and spec.do == ["train"]
    for cell in cells:
        config, preset = cell.config.to_dict(), presets[cell.index].to_dict()
        assert config.pop("seed") == cell.seed
        for key in ("seed", "name"):
            config.pop(key, None)
            preset.pop(key)
        assert config == preset, cell.name


def test_implicit_update_quick_mode_measures_both_settings(tmp_path):
    script = load_script("implicit_update")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == 2 and set(results["status"]) == {"done"}
    assert sorted(results["model.mlp_skip"]) == [False, True]
    assert json.loads((tmp_path / "spec.json").read_text())["seeds"] == [0]
    assert summary["n_runs"] == 2 and summary["tasks"] == script.QUICK_TASKS
    runs = pd.DataFrame(summary["runs"])
    assert sorted(runs["setting"]) == ["extension", "source"] and set(runs["seed"]) == {0}
    assert (runs["step"] == script.QUICK_AXES["train.steps"][0]).all()
    for slope in ("slope", "untrained_slope", "growing_slope"):
        assert runs[slope].map(math.isfinite).all(), slope
        assert (runs[f"{slope}_low"] <= runs[slope]).all() and (runs[slope] <= runs[f"{slope}_high"]).all()
    assert runs["equality_max_abs_dy"].map(math.isfinite).all()
    assert (runs["equality_max_abs_dy"] < 1e-6).all()  # exact algebra in float64: measured ~2e-15
    assert (runs["delta_w_rank"] == 1).all() and runs["fraction_tasks_shrinking"].between(0, 1).all()
    for column in ("final_eval_loss", "ft_best_loss_one_pass", "icl_loss_all_N", "zero_loss"):
        assert (runs[column] > 0).all(), column
    population = pd.DataFrame(summary["population"])
    assert sorted(population["setting"]) == ["extension", "source"] and (population["n_runs"] == 1).all()
    for column in [c for c in population.columns if c.endswith(" k")]:
        assert population[column].between(0, population["n_runs"]).all(), column
        assert population[column[:-2]].str.match(r"^\d/1 \[").all(), column
    assert (population["max equality |Δŷ|"] < 1e-6).all()
    data = tmp_path / "implicit_update_data"
    for name in ("runs.csv", "population.csv", "fine_tuning.csv", "extension_step_norms.csv", "source_loss_by_examples.csv"):
        assert (data / name).exists(), name
    assert (tmp_path / "implicit_update.html").read_text().count("<section") == 6  # setting, population, runs, fine-tuning, 2 figures


def test_linear_attention_gd_quick_mode_compares_every_cell_with_gd(tmp_path):
    script = load_script("linear_attention_gd")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    committed = json.loads((ANALYSES / "sweeps" / "linear_attention_gd.json").read_text())
    assert sorted(committed["axes"]["model.n_layers"]) == [1, 2, 3] and len(committed["seeds"]) >= 3
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == len(script.QUICK_LAYERS) and set(results["status"]) == {"done"}
    runs = pd.read_csv(tmp_path / "linear_attention_gd_data" / "runs.csv")
    assert sorted(runs["layers"]) == script.QUICK_LAYERS and (runs["seed"] == 0).all()
    assert runs["sensitivity_cosine"].between(-1, 1).all() and runs["eta_fitted_to_model"].gt(0).all()
    # the learning rate fitted to the targets is the best plain GD can do on these tasks
    assert (runs["loss_gd_best"] <= runs["loss_gd_fitted_to_model"] + 1e-12).all()
    assert (runs["loss_least_squares"] < 1e-6).all() and runs["loss_zero"].gt(runs["loss_gd_best"]).all()
    assert summary["construction_error"] < 1e-12  # the constructed layer is one GD step, float64
    population = pd.DataFrame(summary["population"])
    assert list(population["layers"]) == script.QUICK_LAYERS
    assert population["beats L plain GD steps (best lr)"].str.match(r"^[01]/1 \[").all()
    assert (tmp_path / "linear_attention_gd.html").read_text().count("<section") == 4


def test_abrupt_learning_quick_mode_summarises_every_arm(tmp_path):
    script = load_script("abrupt_learning")
    summary = script.main(["--quick", "--out", str(tmp_path)])
    results = pd.read_csv(tmp_path / "sweep" / "results.csv")
    assert len(results) == 3 and set(results["status"]) == {"done"}  # 3 arms x seed 0
    runs = pd.DataFrame(summary["runs"])
    assert list(runs["arm"]) == list(script.ARMS) and (runs["seed"] == 0).all()
    assert (runs["steps"] == script.QUICK["train.steps"]).all()
    assert runs["final_icl_accuracy"].between(0, 1).all() and runs["final_loss"].gt(0).all()
    assert list(runs["plateau_accuracy"]) == [2 / 8, 1 / 8, 1 / 8] and list(runs["n_labels"]) == [32, 8, 32]
    assert len(summary["verdicts"]) >= 4 and summary["n_runs"] == 3
    assert (tmp_path / "abrupt_learning.html").read_text().count("<section") == 3  # verdicts, runs, figures
