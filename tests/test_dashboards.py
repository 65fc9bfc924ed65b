"""The dashboards: every notebook in dashboards/ executes headless on a small run, is stored without
outputs, and shows what it should; `interp_icl.viz.explorer` against hand-computed answers."""

import json
import math
import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import torch
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from nbclient import NotebookClient

from interp_icl.analysis.common import hook_cache
from interp_icl.config import TaskConfig
from interp_icl.errors import InterpICLError
from interp_icl.models.handmade_gih import gih_for_parents
from interp_icl.models.handmade_standard import induction_circuit
from interp_icl.seeding import generator
from interp_icl.tasks.markov import MarkovTask
from interp_icl.viz import explorer
from tests.conftest import copy_run, tiny_config

ROOT = Path(__file__).resolve().parents[1]
DASHBOARDS = ROOT / "dashboards"
NOTEBOOKS = sorted(DASHBOARDS.glob("*.ipynb"))
EXPECTED = {"attention_explorer.ipynb", "patching.ipynb", "training_dynamics.ipynb", "sweep.ipynb"}
CELL_TIMEOUT_S = 120
PLOTLY = "application/vnd.plotly.v1+json"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_trained_run) -> Path:
    """A 40-step standard run on 24-token Markov sequences with parents {1}: a copy of the
    session's `tiny_config()` run (the notebooks store analysis results in it)."""
    return copy_run(tiny_trained_run, tmp_path_factory.mktemp("dashboards") / "tiny")


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory, local_ray) -> Path:
    """A sweep of 2 settings x 2 seeds of 8-step runs, trained and analysed on the session's
    local Ray instance."""
    from interp_icl.sweeps import run_sweep

    base = tiny_config(train={"steps": 8, "checkpoint_every": 8}).to_dict()
    base.pop("versions")
    spec = {"base": {"config": base}, "axes": {"task.alpha": [0.5, 1.0]}, "seeds": [0, 1],
            "do": ["train", "analyze"], "analysis": {"n_sequences": 8, "n_kernels": 10}}
    return run_sweep(spec, tmp_path_factory.mktemp("dashboards") / "sweep", workers=2).path


@pytest.fixture(scope="module")
def executed(tiny_run, tiny_sweep):
    """name -> the notebook executed on `tiny_run` (each notebook runs once per module)."""
    done: dict[str, nbformat.NotebookNode] = {}

    def run(name: str) -> nbformat.NotebookNode:
        if name not in done:
            nb = nbformat.read(DASHBOARDS / name, as_version=4)
            # "python3" from this interpreter's own ipykernel, whatever kernelspecs are installed
            km = AsyncKernelManager(
                kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
            )
            client = NotebookClient(
                nb,
                km=km,
                timeout=CELL_TIMEOUT_S,
                kernel_name="python3",
                resources={"metadata": {"path": str(DASHBOARDS)}},  # Jupyter's working directory
            )
            env = {**os.environ, explorer.RUN_ENV: str(tiny_run), explorer.SMALL_ENV: "1",
                   explorer.SWEEP_ENV: str(tiny_sweep)}
            client.execute(env=env)  # raises CellExecutionError on any error
            done[name] = nb
        return done[name]

    return run


def _outputs(nb) -> list[dict]:
    return [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs]


def _data(nb, mime: str) -> list:
    return [out["data"][mime] for out in _outputs(nb) if mime in out.get("data", {})]


def _text(nb) -> str:
    return "".join(out.get("text", "") for out in _outputs(nb) if out["output_type"] == "stream")


def values(array) -> list:
    """A plotly figure's numeric array as a list (plotly stores them as {"dtype", "bdata"}, base64)."""
    import base64

    import numpy as np

    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def _figures(nb) -> list[dict]:
    figures = _data(nb, PLOTLY)
    return [json.loads(f) if isinstance(f, str) else f for f in figures]


# ---------------------------------------------------------------- stored notebooks


def test_the_dashboards_exist():
    assert EXPECTED <= {nb.name for nb in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_clean_with_a_parameter_cell_first(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} has outputs"
    first = nb.cells[0]
    assert first.cell_type == "code" and "parameters" in first.metadata.get("tags", [])
    if path.name == "sweep.ipynb":
        assert explorer.SWEEP_ENV in first.source and explorer.DEFAULT_SWEEP in first.source
    else:
        assert explorer.RUN_ENV in first.source and explorer.DEFAULT_RUN in first.source
    assert any(cell.cell_type == "markdown" for cell in nb.cells)
    assert nb.metadata.kernelspec.name == "python3"


# ---------------------------------------------------------------- executed notebooks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_on_a_small_run(executed, path):
    nb = executed(path.name)
    assert not [out for out in _outputs(nb) if out["output_type"] == "error"]
    assert _data(nb, PLOTLY), f"{path.name} shows no plotly figure"


def test_sweep_dashboard_shows_the_summary_rates_and_cells(executed, tiny_sweep):
    nb = executed("sweep.ipynb")
    assert f"sweep {tiny_sweep}: 4 cells, failed: none" in _text(nb)
    (figure,) = _figures(nb)
    bars = [t for t in figure["data"] if t["type"] == "bar"]
    assert {t["name"] for t in bars} == {"task.alpha=0.5", "task.alpha=1.0"}
    summary = pd.read_parquet(tiny_sweep / "summary.parquet").set_index("task.alpha")
    for bar in bars:  # each bar is a verdict's rate in that setting's summary row
        row = summary.loc[float(bar["name"].split("=")[1])]
        assert [row[f"{v}_rate"] for v in values(bar["x"])] == pytest.approx(values(bar["y"]))
    tables = [html for html in _data(nb, "text/html") if "loss_over_bayes" in html]
    assert len(tables) == 2  # the summary and the cells


def test_attention_explorer_shows_both_layers_with_the_parent_structure(executed, tiny_run):
    nb = executed("attention_explorer.ipynb")
    assert f"run {tiny_run}" in _text(nb)
    (figure,) = _figures(nb)
    heatmaps = [t for t in figure["data"] if t["type"] == "heatmap"]
    marks = [t for t in figure["data"] if t["type"] == "scatter"]
    assert len(heatmaps) == 4 and len(marks) == 4  # 2 layers x 2 heads
    assert {t["name"] for t in marks} == set(explorer.MARKS)
    # circuitsvis views for layers 0 and 1, bundle inlined: no script is loaded from elsewhere
    views = [html for html in _data(nb, "text/html") if "CircuitsVis.render" in html]
    assert len(views) == 2 and "L0H0" in views[0] and "L1H1" in views[1]
    assert all("<script src" not in html and len(html) > 100_000 for html in views)
    summary = [html for html in _data(nb, "text/html") if "mass_on_marks" in html]
    assert len(summary) == 1


def test_patching_dashboard_shows_the_heatmap_top_effects_and_the_circuit(executed, tiny_run):
    nb = executed("patching.ipynb")
    figure, graph, curve = _figures(nb)
    assert [t["type"] for t in figure["data"]] == ["heatmap", "heatmap"]  # one panel per layer
    assert "z patching" in figure["layout"]["title"]["text"]
    tables = [html for html in _data(nb, "text/html") if "effect_stderr" in html]
    assert len(tables) == 1 and tables[0].count("<tr") == 11  # header + TOP = 10 rows
    assert "8 sequences" in _text(nb)
    # the circuit section: the stored circuit drawn, its curve ending at the whole model
    from interp_icl.runs.circuits import stored_circuits

    (stored,) = stored_circuits(tiny_run, 40)
    shown = {t["hovertext"].split(":")[0] for t in graph["data"] if t.get("hovertext")}
    assert shown == set(stored.edges.loc[stored.edges["in_circuit"] | stored.edges["hypothesis"].notna(), "edge"])
    assert values(curve["data"][0]["y"])[-1] == pytest.approx(1.0)
    assert f"circuit for 0.9: {stored.circuit_size} edges" in _text(nb)


def test_dynamics_dashboard_shows_losses_roles_and_stage_order(executed, tiny_run):
    nb = executed("training_dynamics.ipynb")
    loss, roles = _figures(nb)
    assert {t["name"] for t in loss["data"]} >= {"model", "Bayes-optimal"}
    axes = [key for key in roles["layout"] if key.startswith("xaxis")]
    assert axes and all(roles["layout"][key]["type"] == "log" for key in axes)
    text = _text(nb)
    assert "13 checkpoints" in text and "order by half-rise step" in text
    assert len(list((tiny_run / "results" / "analysis").glob("step_*/settings.json"))) == 13  # stored


# ---------------------------------------------------------------- explorer: positions


def test_parent_positions_by_hand():
    mask = explorer.parent_mask(6, (1, 3))
    expected = {(1, 0), (2, 1), (3, 2), (3, 0), (4, 3), (4, 1), (5, 4), (5, 2)}
    assert {tuple(ij) for ij in mask.nonzero().tolist()} == expected


def test_full_matches_by_hand():
    # TransformerLens convention: row i predicts t = i + 1; parent 1 of the target is x_i, and
    # key l <= i matches when x_{l-1} = x_i
    tokens = torch.tensor([0, 1, 0, 1, 1, 0])
    mask = explorer.full_match_mask(tokens, (1,), offset=1)
    expected = {(2, 1), (3, 2), (4, 2), (4, 4), (5, 1), (5, 3)}
    assert {tuple(ij) for ij in mask.nonzero().tolist()} == expected
    # gih convention: row t is target t; period-3 tokens match on {1, 2} when l = t mod 3
    tokens = torch.tensor([2, 0, 1, 2, 0, 1, 2])
    mask = explorer.full_match_mask(tokens, (1, 2), offset=0)
    assert {tuple(ij) for ij in mask.nonzero().tolist()} == {(5, 2), (6, 3)}
    assert not explorer.full_match_mask(tokens, (), offset=0).any()


def _brute_force_full_matches(tokens: list[int], parents, offset: int) -> set:
    seq_len, found = len(tokens), set()
    for i in range(seq_len):
        t = i + offset
        for key in range(seq_len):
            inside = all(0 <= t - p < seq_len and 0 <= key - p for p in parents)
            if key < t and inside and all(tokens[key - p] == tokens[t - p] for p in parents):
                found.add((i, key))
    return found


@pytest.mark.parametrize("parents", [(1,), (2,), (1, 2), (1, 3), (2, 3, 5)])
@pytest.mark.parametrize("offset", [0, 1])
def test_full_match_mask_equals_brute_force(parents, offset):
    generator = torch.Generator().manual_seed(len(parents) * 10 + offset)
    for _ in range(5):
        tokens = torch.randint(0, 2, (17,), generator=generator)
        mask = explorer.full_match_mask(tokens, parents, offset)
        got = {tuple(ij) for ij in mask.nonzero().tolist()}
        assert got == _brute_force_full_matches(tokens.tolist(), parents, offset)


# ---------------------------------------------------------------- explorer: tables and figure


def test_marker_summary_of_known_patterns():
    seq_len = 8
    previous = torch.zeros(1, seq_len, seq_len)  # head 0 of layer 0: attends i - 1 (0 -> 0)
    previous[0, 0, 0] = 1.0
    previous[0, torch.arange(1, seq_len), torch.arange(seq_len - 1)] = 1.0
    uniform = torch.tril(torch.ones(seq_len, seq_len))
    uniform = (uniform / uniform.sum(-1, keepdim=True))[None]  # layer 1: uniform on keys 0..i
    tokens = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1])
    data = explorer.pattern_table([previous, uniform], tokens, (1,), offset=1)
    assert len(data) == 2 * seq_len * (seq_len + 1) // 2
    summary = explorer.marker_summary(data).set_index("layer")
    chance = sum(1 / (i + 1) for i in range(1, seq_len)) / (seq_len - 1)
    assert summary.loc[0, "queries"] == seq_len - 1
    assert summary.loc[0, "mass_on_marks"] == pytest.approx(1.0)
    assert summary.loc[0, "uniform_share"] == pytest.approx(chance)
    # uniform attention puts exactly the uniform share on the full matches
    assert summary.loc[1, "mass_on_marks"] == pytest.approx(summary.loc[1, "uniform_share"])
    marks = explorer.full_match_mask(tokens, (1,), 1)
    assert summary.loc[1, "queries"] == int(marks.any(-1).sum())


@pytest.mark.parametrize("family", ["standard", "gih"])
def test_attention_figure_of_handmade_circuits(family):
    """Hand-set copier and classifier heads put their attention on the marks, and the figure and
    its table show the model's own patterns."""
    parents = (1,) if family == "standard" else (1, 2)
    seq_len = 40
    task = MarkovTask(TaskConfig(vocab_size=3, parents=parents, alpha=0.1, seq_len=seq_len))
    tokens = explorer.sample_sequence(task, 0, seed=3)
    if family == "standard":
        model, copiers, classifiers = induction_circuit(3, seq_len), [0], [1]
    else:
        model, copiers, classifiers = (
            gih_for_parents(parents, 3, seq_len, sharpness=30.0),
            [0, 1],
            [0],
        )
    fig, data = explorer.attention_figure(model, tokens, parents)

    summary = explorer.marker_summary(data).set_index(["layer", "head"])
    for head in copiers:
        assert summary.loc[(0, head), "mass_on_marks"] > 0.95
    for head in classifiers:
        row = summary.loc[(1, head)]
        assert row["mass_on_marks"] > 0.9 and row["uniform_share"] < 0.6

    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(2)]
    cache = hook_cache(model, tokens[None], names)
    for (layer, head), part in data.groupby(["layer", "head"]):
        pattern = cache[names[layer]][0, head]
        assert torch.allclose(
            torch.tensor(part["attention"].to_numpy(), dtype=torch.float32),
            pattern[torch.tensor(part["query"].tolist()), torch.tensor(part["key"].tolist())],
        )
    heatmaps = [t for t in fig.data if t.type == "heatmap"]
    scatters = [t for t in fig.data if t.type == "scatter"]
    assert len(heatmaps) == len(scatters) == len(data.groupby(["layer", "head"]))
    marked = data[data["marked"]]
    for trace, ((layer, head), part) in zip(scatters, marked.groupby(["layer", "head"])):
        assert list(trace.x) == part["key"].tolist() and list(trace.y) == part["query"].tolist()
        expected = (
            explorer.parent_mask(seq_len, parents)
            if layer == 0
            else explorer.full_match_mask(tokens, parents, 0 if family == "gih" else 1)
        )
        assert set(zip(trace.y, trace.x)) == {tuple(ij) for ij in expected.nonzero().tolist()}
    z = heatmaps[0].z  # L0H0: blank above the diagonal, the pattern (4 decimals) below
    assert math.isnan(z[0][1])
    assert z[1][0] == pytest.approx(float(cache[names[0]][0, 0, 1, 0]), abs=1e-4)


def test_sample_sequence_is_seeded_and_ordered_by_variety():
    task = MarkovTask(TaskConfig(vocab_size=3, parents=(1, 2), alpha=0.1, seq_len=50))
    first = explorer.sample_sequence(task, 0, seed=1)
    assert torch.equal(first, explorer.sample_sequence(task, 0, seed=1))
    shares = [
        explorer.full_match_share(explorer.sample_sequence(task, i, seed=1), (1, 2))
        for i in range(4)
    ]
    assert shares == sorted(shares)
    drawn = task.sample(64, generator(1, "explorer")).tokens
    assert torch.equal(explorer.sample_sequence(task, 5, seed=1, most_varied=False), drawn[5])
    assert explorer.full_match_share(torch.zeros(10, dtype=torch.long), (1,)) < 1  # row 0: no key
    assert explorer.task_parents(task) == (1, 2)


def test_top_effects_orders_by_absolute_effect():
    table = pd.DataFrame({"layer": [0, 0, 1, 1], "effect": [0.1, -0.5, 0.3, -0.2]})
    top = explorer.top_effects(table, 3)
    assert top["effect"].tolist() == [-0.5, 0.3, -0.2]


def test_run_dir_resolves_from_the_root_or_dashboards(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    (root / "dashboards").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    (root / "runs" / "quickstart").mkdir(parents=True)
    monkeypatch.delenv(explorer.RUN_ENV, raising=False)
    for start in (root, root / "dashboards"):
        assert explorer.run_dir(start=start) == (root / "runs" / "quickstart").resolve()
    (root / "runs" / "other").mkdir()
    monkeypatch.setenv(explorer.RUN_ENV, "runs/other")
    assert explorer.run_dir(start=root / "dashboards") == (root / "runs" / "other").resolve()
    monkeypatch.setenv(explorer.RUN_ENV, str(tmp_path))
    assert explorer.run_dir(start=root) == tmp_path
    with pytest.raises(InterpICLError, match="does not exist.*INTERP_ICL_RUN"):
        explorer.run_dir("runs/missing", start=root)
