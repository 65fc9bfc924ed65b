"""`interp-icl report`: the self-contained HTML report, its data files, and that it renders
offline in headless Chromium (every plotly figure and circuitsvis view, no console errors)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from interp_icl.errors import InterpICLError
from interp_icl.runs import create_run
from interp_icl.viz.report import build_report
from tests.test_cli import run_cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
SCREENSHOT_DIR = Path(os.environ.get("INTERP_ICL_SCREENSHOTS", "test-artifacts"))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, request):
    """A small standard run (40 steps, 13 checkpoints: a copy of the session's `tiny_config()`
    run) and its report, written by the CLI with small sample sizes. With
    ``INTERP_ICL_REPORT_RUN=runs/quickstart`` the module checks the report of a copy of that run
    instead, made with the default settings (what users get)."""
    from tests.conftest import copy_run

    given = os.environ.get("INTERP_ICL_REPORT_RUN")
    if given:
        run = tmp_path_factory.mktemp("report") / Path(given).name
        ignore = shutil.ignore_patterns("report.html", "report_data")
        shutil.copytree(given, run, ignore=ignore)
        sizes = []
    else:
        run = copy_run(request.getfixturevalue("tiny_trained_run"), tmp_path_factory.mktemp("report") / "tiny")
        sizes = ["--n-sequences", "32", "--n-kernels", "50", "--dynamics-sequences", "16"]
    done = run_cli("report", str(run), "--no-progress", *sizes, cwd=run.parent)
    assert done.returncode == 0, done.stderr
    return run


def test_report_holds_every_section_and_its_data(small_run):
    report = small_run / "report.html"
    text = report.read_text(encoding="utf-8")
    data = small_run / "report_data"
    info = json.loads((data / "report.json").read_text())
    # plotly.js and the circuitsvis bundle once each, no external script or stylesheet
    assert text.count('class="plotly-graph-div"') == info["figures"] >= 6
    assert text.count("CircuitsVis.render(") == info["attention_views"] == 4
    assert text.count("<script>/**\n* plotly.js v") == 1  # plotly.js inlined once
    outside_scripts = re.sub(r"<script>.*?</script>", "", text, flags=re.DOTALL)
    assert not re.search(r"<(script|link|img|iframe)\b[^>]*\b(src|href)=", outside_scripts)
    for section in ("summary", "verdicts", "dynamics", "layers", "attention", "patching", "circuit"):
        assert f'id="{section}"' in text
    # every figure names its data file, and every named file exists (plus the tables' data)
    named = re.findall(r'<p class="data">data: ([^<]+)</p>', text)
    assert len(named) == info["figures"]
    assert {"loss_curves.csv", "role_curves.csv", "copier.csv", "selector.csv"} <= set(named)
    for name in [*named, "verdicts.csv", "roles.csv", "dynamics.csv"]:
        assert (data / name).is_file(), name
    verdicts = pd.read_csv(data / "verdicts.csv")
    assert {
        "copier: copied offsets (cover the parents?)",
        "selector: selected set",
        "role experiment: copier",
    } <= set(verdicts["quantity"])
    # the loss data are the run's metrics, not a copy with different numbers
    metrics = pd.read_json(small_run / "metrics.jsonl", lines=True)
    loss = pd.read_csv(data / "loss_curves.csv")
    assert loss["model"].tolist() == pytest.approx(metrics["eval_loss"].tolist())
    assert loss["Bayes-optimal"].tolist() == pytest.approx(metrics["bayes_loss"].tolist())
    # the circuit graph draws the circuit's edges and the hypothesis's; the curve ends at the model
    edges = pd.read_csv(data / "circuit_eap-ig_1_edges.csv")
    drawn = pd.read_csv(data / "circuit_eap-ig_1_graph.csv")
    assert set(drawn["edge"]) == set(edges.loc[edges["in_circuit"] | edges["hypothesis"].notna(), "edge"])
    assert set(drawn.loc[drawn["kind"] == "missing", "edge"]) == set(edges.loc[~edges["in_circuit"] & edges["hypothesis"].notna(), "edge"])
    curve = pd.read_csv(data / "circuit_faithfulness.csv")
    assert curve["recovered"].iloc[-1] == pytest.approx(1.0) and curve["edges"].iloc[-1] == len(edges)
    # the attention values shown are the model's patterns, rounded to 3 decimals
    view = json.loads(next(data.glob("attention_seq*_layer1.json")).read_text())
    pattern = view["attention"]
    assert len(pattern) == 2 and len(pattern[0]) == len(view["tokens"])
    assert all(abs(sum(row) - 1) < 0.01 for head in pattern for row in head)


def test_report_attention_values_equal_the_model_patterns(small_run):
    import torch

    from interp_icl.analysis.common import hook_cache
    from interp_icl.runs import load_run
    from interp_icl.seeding import generator
    from interp_icl.viz.report import N_VIEW_POOL, N_VIEW_SEQUENCES

    loaded = load_run(small_run)
    pool = loaded.task.sample(N_VIEW_POOL, generator(loaded.config.seed, "report", "attention")).tokens
    shown = sorted({int(p.name.split("_")[1].removeprefix("seq")) for p in (small_run / "report_data").glob("attention_seq*")})
    assert len(shown) == N_VIEW_SEQUENCES

    # the shown sequences are those with the most distinct parent contexts (counted here by hand)
    def contexts(seq):
        parents, x = loaded.task.parents, seq.tolist()
        return len({tuple(x[t - p] for p in parents) for t in range(max(parents), len(x))})

    counts = sorted((contexts(seq) for seq in pool), reverse=True)
    assert sorted(contexts(pool[i]) for i in shown) == sorted(counts[:N_VIEW_SEQUENCES])
    for i in shown:
        for layer in (0, 1):
            name = f"blocks.{layer}.attn.hook_pattern"
            with torch.no_grad():
                pattern = hook_cache(loaded.model, pool[i : i + 1], [name])[name][0]
            view = json.loads(
                (small_run / "report_data" / f"attention_seq{i}_layer{layer + 1}.json").read_text()
            )
            assert view["tokens"] == [str(int(t)) for t in pool[i]]
            assert torch.tensor(view["attention"]).sub(pattern).abs().max() <= 0.0005 + 1e-7


def test_bad_input_leaves_an_old_report_untouched(small_run, tmp_path):
    report = small_run / "report.html"
    before = report.read_bytes()
    with pytest.raises(InterpICLError, match="does not exist"):
        build_report(tmp_path / "missing")
    with pytest.raises(InterpICLError, match=r"\.html"):
        build_report(small_run, small_run / "report.txt")
    assert report.read_bytes() == before
    done = run_cli("report", str(tmp_path / "missing"), cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(CHROMIUM is None, reason="no Chromium installed (.ci/run installs it)")
def test_report_renders_offline_in_headless_chromium(small_run):
    playwright = pytest.importorskip("playwright.sync_api")
    report = small_run / "report.html"
    info = json.loads((small_run / "report_data" / "report.json").read_text())
    errors: list[str] = []
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            context = browser.new_context(offline=True, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on(
                "request",
                lambda r: (
                    requests.append(r.url)
                    if not r.url.startswith(("file:", "data:", "blob:"))
                    else None
                ),
            )
            page.goto(report.resolve().as_uri(), wait_until="load")
            page.wait_for_function(
                "n => document.querySelectorAll('.js-plotly-plot .main-svg').length >= n",
                arg=info["figures"],
                timeout=60_000,
            )
            page.wait_for_function(
                "() => [...document.querySelectorAll('.attention-view')]"
                ".every(d => d.childElementCount > 0 && d.querySelectorAll('canvas, svg, td, div').length > 3)",
                timeout=60_000,
            )
            plots = page.eval_on_selector_all(
                ".js-plotly-plot",
                "els => els.map(e => e.querySelectorAll('.main-svg').length > 0 && e.getBoundingClientRect().height > 100)",
            )
            views = page.eval_on_selector_all(
                ".attention-view", "els => els.map(e => e.getBoundingClientRect().height > 50)"
            )
            SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_DIR / "report.png"), full_page=True)
        finally:
            browser.close()
    assert len(plots) == info["figures"] and all(plots)
    assert len(views) == info["attention_views"] and all(views)
    assert errors == []
    assert requests == []


def test_report_on_a_gih_run_patches_each_layer_and_shows_its_weights(tmp_path):
    """gih layers differ in head count (3 vs 1): the default sweep runs per layer; the report
    also draws the relative-position weights, whose data are the model's w_rpe."""
    from interp_icl.runs import load_run
    from tests.conftest import tiny_config

    run = tmp_path / "gih"
    config = tiny_config(
        model={"family": "gih", "n_heads": 2, "window": 2, "max_degree": 2},
        train={"steps": 8, "checkpoint_every": 8},
    )
    create_run(config, run, force=True, progress=False).run()
    build_report(run, n_sequences=16, n_kernels=20, dynamics_sequences=8)
    data = run / "report_data"
    assert (data / "patch_z_pos_L0_step8.csv").is_file()
    assert (data / "patch_z_pos_L1_step8.csv").is_file()
    weights = pd.read_csv(data / "rpe_weights.csv")
    w_rpe = load_run(run).model.w_rpe.detach().double()
    assert len(weights) == w_rpe.numel()
    for row in weights.itertuples():
        assert row.weight == pytest.approx(float(w_rpe[row.head, row.offset - 1]))
    edges = pd.read_csv(data / "circuit_eap-ig_1_edges.csv")  # the gih graph: features between the layers
    assert edges["receiver"].str.startswith("F[").any() and (data / "circuit_faithfulness.csv").is_file()


def test_report_on_a_one_layer_model_says_no_circuit_exists(tmp_path):
    """A 1-layer standard model: the report is written, its verdict rows say the circuit passes
    were not measured and why, and the role experiments are undecided rather than failed."""
    from tests.conftest import tiny_config

    run = tmp_path / "one-layer"
    create_run(tiny_config(model={"n_layers": 1}, train={"steps": 8}), run, progress=False).run()
    path = build_report(run, n_sequences=16, n_kernels=20, dynamics_sequences=8)
    verdicts = pd.read_csv(run / "report_data" / "verdicts.csv")
    skipped = verdicts[verdicts["quantity"].str.endswith("not measured")]
    assert set(skipped["quantity"]) == {"copier: not measured", "selector: not measured", "classifier: not measured"}
    assert skipped["model"].str.contains("no copier -> classifier circuit can exist").all()
    roles = verdicts[verdicts["quantity"].str.startswith("role experiment")]
    assert len(roles) == 3 and (roles["agrees"] == "–").all()
    assert sorted(p.name for p in (run / "report_data").glob("attention_seq*")) and path.is_file()
    assert not list((run / "report_data").glob("attention_seq*_layer2.json"))  # one layer only


def test_report_on_a_three_layer_model_shows_copiers_of_both_earlier_layers(tmp_path):
    from tests.conftest import tiny_config

    run = tmp_path / "three-layer"
    create_run(tiny_config(model={"n_layers": 3}, train={"steps": 8}), run, progress=False).run()
    build_report(run, n_sequences=16, n_kernels=20, dynamics_sequences=8)
    copier = pd.read_csv(run / "report_data" / "copier.csv")
    assert sorted(copier["layer"].unique()) == [0, 1] and sorted(copier["head"].unique()) == [0, 1]
    assert len(list((run / "report_data").glob("attention_seq*_layer3.json"))) == 2
