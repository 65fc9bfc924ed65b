"""Which parent set does a trained gih model select, and which criterion predicts it?

Usage:

    python analyses/selection_phase_diagram.py [--quick] [--out DIR] [--workers 2]

The sweep (``analyses/sweeps/selection_phase_diagram.json``, run with ``interp-icl sweep``)
trains TF(M = 3, H = 3, d = 3, D) in cells where the predicted S* is not simply the true parents,
or where the two criteria disagree, plus the paper's default setting as a control; every cell
from the reference initialisation (head h prefers offset h + 1: w+ = 3, w− = 0.1) and from a
non-aligned one (w+ = w− = 0 plus N(0, 0.3²) noise on every position logit, drawn from the seed),
5 seeds each. Training: the paper's full-batch SGD (lr 1, last-token loss) on a fixed set of
5,000 sequences for 800 epochs (the paper: 10,000 sequences, up to 50,000 epochs).

Per setting the theory (`interp_icl.theory.selection.estimate_selection`, 4,000 prior kernels)
gives both criteria's S* with stderr. Per trained run, on 2,000 fresh sequences:

* p_S over head subsets, summed over the subsets whose heads copy the same offsets (each head
  named by its dominant offset): the weight of each offset set; the trained S* = the offset set
  with the largest weight (`p_top`), the runner-up, and the weights of the true parents and of
  each criterion's S*;
* the selector pass's behavioural selected set (the offsets the layer-2 feature depends on);
* last-token loss of the model, the Bayes predictor, and the S-gram estimators (add-0.01) of the
  true parents and of each criterion's S*, on the sequences whose target occurs in the context
  (the gih output gives an unseen target probability 0; REFERENCE §1, docs/results.md).

Verdicts: per run, whether each criterion's S* equals the trained S*; per criterion, "predicts the
trained S* in k of n runs" (and in how many settings the majority of runs) with Wilson intervals,
over all runs and over the runs whose top offset set carries p >= 0.9 (a run below that spreads
its weight over several sets, and its "trained S*" is only the largest of them).
"""

from __future__ import annotations

import math
import sys
from collections import Counter
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study  # noqa: E402

from interp_icl import load_run  # noqa: E402
from interp_icl.analysis.result import set_label  # noqa: E402
from interp_icl.analysis.selector import selector  # noqa: E402
from interp_icl.seeding import generator  # noqa: E402
from interp_icl.sweeps import wilson_interval  # noqa: E402
from interp_icl.theory.estimators import sgram_probs  # noqa: E402
from interp_icl.theory.selection import CRITERIA, estimate_selection, selection_grid  # noqa: E402
from interp_icl.viz.report import ReportPage  # noqa: E402

NAME = "selection_phase_diagram"
# the theory search for a non-exchangeable prior where the criteria disagree (d = 3, window 3, D = 2)
SEARCH_PROBS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
SEARCH_CASES = (((1, 2), (2,)), ((1, 2), (1,)), ((1, 3), (3,)), ((1, 3), (1,)))
SEARCH_KERNELS, SEARCH_KERNELS_QUICK = 2000, 50
N_KERNELS, N_KERNELS_QUICK = 4000, 200
N_EVAL, N_EVAL_QUICK = 2000, 200
N_SELECTOR = 256
BETA = 0.01  # add-β of the S-gram estimators compared with the model
CONCENTRATED = 0.9  # a run "selects one set" when its top offset set carries p >= this
TASK_KEYS = ("task.parents", "task.alpha", "task.weak_parents", "task.weak_parent_prob", "model.max_degree")
INIT_KEYS = ("model.w_plus", "model.w_minus", "model.rpe_noise")
QUICK_SETTINGS = 2  # the quick mode trains the first settings of the committed spec only
QUICK = {"train.steps": 20, "train.n_train": 200, "train.batch_size": 200, "train.eval_every": 10,
         "train.n_eval": 100, "train.checkpoint_every": 20}


def weak_parent_search(n_kernels: int, probs: tuple[float, ...] = SEARCH_PROBS) -> pd.DataFrame:
    """Both criteria's S* over weak-parent priors: α ∈ {0.1, 1}, SEARCH_CASES (parents, weak),
    weak_parent_prob in `probs` (q = 1 is the plain prior: every kernel uses every parent)."""
    cases = [(alpha, parents, weak, q) for alpha in (0.1, 1.0) for parents, weak in SEARCH_CASES for q in probs]
    settings = [
        dict(vocab_size=3, parents=parents, alpha=alpha, window=3, max_degree=2,
             **({"weak_parents": weak, "weak_parent_prob": q} if q < 1 else {}))
        for alpha, parents, weak, q in cases
    ]
    table = selection_grid(settings, n_kernels=n_kernels, seed=0)
    table["weak_parents"] = [set_label(weak) for _, _, weak, _ in cases]
    table["weak_parent_prob"] = [q for _, _, _, q in cases]
    return table


def init_label(row: pd.Series) -> str:
    return "reference" if float(row["model.rpe_noise"]) == 0 else "non-aligned"


def setting_label(row: pd.Series) -> str:
    parents = row["task.parents"]
    text = f"pa {parents.replace('[', '{').replace(']', '}').replace(' ', '')}, α {row['task.alpha']}, D {row['model.max_degree']}"
    weak = row.get("task.weak_parents")
    if isinstance(weak, str) and weak not in ("[]", ""):
        text += f", weak {weak.replace('[', '{').replace(']', '}')} q {row['task.weak_parent_prob']}"
    return text


def theory_rows(sweep, n_kernels: int) -> pd.DataFrame:
    """Both criteria's S*, mean ± stderr and the gap to the runner-up, per task setting."""
    import json

    rows = []
    keys = [k for k in TASK_KEYS if k in sweep.results.columns]
    for values, _ in sweep.results.groupby(keys, sort=False):
        setting = dict(zip(keys, values))
        parents = tuple(json.loads(setting["task.parents"]))
        weak = tuple(json.loads(setting.get("task.weak_parents", "[]")))
        extra = {"weak_parents": weak, "weak_parent_prob": float(setting.get("task.weak_parent_prob", 1.0))} if weak else {}
        estimate = estimate_selection(3, parents, float(setting["task.alpha"]), window=3,
                                      max_degree=int(setting["model.max_degree"]), n_kernels=n_kernels, seed=0, **extra)
        table = estimate.table
        row = {**setting, "label": setting_label(pd.Series(setting))}
        for criterion in CRITERIA:
            part = table[table["criterion"] == criterion].sort_values("mean", ascending=False)
            best = set_label(estimate.predicted[criterion])
            top = part[part["offsets"] == best].iloc[0]
            runner = part[part["offsets"] != best].iloc[0]
            row[f"{criterion}.S*"] = best
            row[f"{criterion}.mean"], row[f"{criterion}.stderr"] = top["mean"], top["stderr"]
            row[f"{criterion}.runner_up"] = runner["offsets"]
            row[f"{criterion}.gap"], row[f"{criterion}.gap_stderr"] = runner["gap_to_best"], runner["gap_stderr"]
            row[f"{criterion}.tied"] = " ".join(set_label(s) for s in estimate.tied_with_best[criterion] if s != estimate.predicted[criterion])
        row["criteria_agree"] = row["chi2_mi.S*"] == row["modified_chi2_mi.S*"]
        rows.append(row)
    return pd.DataFrame(rows)


def offsets_of(label: str) -> tuple[int, ...]:
    return tuple(int(o) for o in label.strip("{}").split(",") if o.strip().isdigit())


def measure_run(run_dir: Path, n_eval: int, predicted: dict[str, str]) -> dict:
    """p_S, the trained S*, the selector's set and the losses of one finished cell; `predicted`:
    {criterion: its S* label}, whose S-gram losses are measured too."""
    run = load_run(run_dir)
    model, task = run.model.eval(), run.task
    parents = tuple(task.parents)
    weights = model.subset_weights().detach()
    masses = torch.softmax(model.w_rpe.detach(), dim=-1)  # [H, M]
    offsets = [int(i) + 1 for i in masses.argmax(-1)]
    by_offsets: dict[str, float] = {}  # p_S summed over head subsets that copy the same offsets
    for subset, weight in zip(model.subsets, weights.tolist()):
        label = set_label({offsets[h] for h in subset}) if subset else "∅"
        by_offsets[label] = by_offsets.get(label, 0.0) + weight
    ranked = sorted(by_offsets.items(), key=lambda kv: -kv[1])
    top_heads = model.subsets[int(weights.argmax())]
    out = {
        "trained_S*": ranked[0][0],
        "p_top": ranked[0][1],
        "second_S": ranked[1][0] if len(ranked) > 1 else "",
        "p_second": ranked[1][1] if len(ranked) > 1 else math.nan,
        "p_parents": by_offsets.get(set_label(parents), 0.0),
        **{f"p_{criterion}_S*": by_offsets.get(label, 0.0) for criterion, label in predicted.items()},
        "head_offsets": " ".join(f"H{h}:{o}({float(masses[h].max()):.2f})" for h, o in enumerate(offsets)),
        "min_copier_mass": min((float(masses[h].max()) for h in top_heads), default=math.nan),
        "a": float(model.a.detach()),
        "p_S": dict(ranked),
    }
    batch = task.sample(n_eval, generator(run.config.seed, NAME, "eval"))
    tokens = batch.tokens
    with torch.no_grad():
        probs = model(tokens)[:, -1].double()
        sel = selector(model, tokens[:N_SELECTOR], parents).summary
    out["selector_set"] = set_label(sel["selected_offsets"]) if sel.get("selected_offsets") else "–"
    target = tokens[:, -1]
    seen = (tokens[:, :-1] == target[:, None]).any(-1)
    out["unseen_target_share"] = float((~seen).double().mean())

    def nll(p: torch.Tensor) -> float:
        picked = p.gather(-1, target[:, None])[:, 0].double().clamp_min(1e-300)
        return float(-picked[seen].log().mean())

    out["loss_model"] = nll(probs)
    out["loss_bayes"] = nll(task.bayes_probs(batch)[:, -1])
    out["loss_parents_gram"] = nll(sgram_probs(tokens, parents, task.vocab_size, BETA)[:, -1])
    trained = offsets_of(out["trained_S*"])  # () for ∅: the in-context unigram
    out["loss_trained_S*_gram"] = nll(sgram_probs(tokens, trained, task.vocab_size, BETA)[:, -1])
    for criterion, label in predicted.items():
        out[f"loss_{criterion}_S*_gram"] = nll(sgram_probs(tokens, offsets_of(label), task.vocab_size, BETA)[:, -1])
    out["model_over_bayes"] = out["loss_model"] / out["loss_bayes"]
    return out


def main(argv: list[str] | None = None) -> dict:
    args = _study.parse_args(NAME, "gih selection phase diagram (issue 15)", argv)
    spec = _study.committed_spec(NAME)
    if args.quick:
        zipped = spec["zip"][0]
        spec = _study.quick_spec(spec, seeds=[0], config=QUICK,
                                 axes={key: spec["axes"][key][:QUICK_SETTINGS] for key in zipped})
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    theory = theory_rows(sweep, N_KERNELS_QUICK if args.quick else N_KERNELS)
    search = weak_parent_search(SEARCH_KERNELS_QUICK, (0.0, 0.3)) if args.quick else weak_parent_search(SEARCH_KERNELS)

    dirs = _study.cell_dirs(sweep)
    results = sweep.results.set_index("cell")
    rows = []
    for cell, run_dir in dirs.items():
        setting = results.loc[cell]
        row = {"cell": cell, "seed": int(setting["seed"]), "setting": setting_label(setting), "init": init_label(setting)}
        match = theory[theory["label"] == row["setting"]].iloc[0]
        predicted = {criterion: match[f"{criterion}.S*"] for criterion in CRITERIA}
        measured = measure_run(run_dir, N_EVAL_QUICK if args.quick else N_EVAL, predicted)
        row.update({k: v for k, v in measured.items() if k != "p_S"})
        row["p_S"] = " ".join(f"{k}:{v:.3f}" for k, v in measured["p_S"].items() if v >= 0.01)
        for criterion in CRITERIA:
            row[f"{criterion}.S*"] = predicted[criterion]
            row[f"{criterion}.predicts"] = predicted[criterion] == row["trained_S*"]
            row[f"{criterion}.predicts_within_ties"] = row["trained_S*"] in {predicted[criterion], *str(match[f"{criterion}.tied"]).split()}
        row["concentrated"] = row["p_top"] >= CONCENTRATED
        rows.append(row)
    runs = pd.DataFrame(rows)
    agreement = agreement_table(runs)
    verdicts = verdict_table(runs)
    page = ReportPage()
    page.add("search", "Theory search: where do the criteria disagree?", intro_search(search)
             + _study.table_html(page, search, "weak_parent_search.csv"))
    page.add("theory", "Theory: both criteria per setting", intro_theory() + _study.table_html(page, theory, "theory.csv"))
    page.add("trained", "Trained S* per setting and initialisation", _study.table_html(page, agreement, "agreement.csv"))
    fig, data = agreement_figure(agreement)
    page.add("rates", "Agreement rates", page.figure(fig, "agreement_rates.csv", data))
    page.add("verdicts", "Verdicts", _study.table_html(page, verdicts, "verdicts.csv"))
    page.add("runs", "Every run", _study.table_html(page, runs, "runs.csv"))
    summary = {
        "quick": args.quick,
        "sweep_seconds": sweep_seconds,
        "n_runs": len(runs),
        "n_kernels": N_KERNELS_QUICK if args.quick else N_KERNELS,
        "search_disagreements": int((~search["agree"]).sum()),
        "search_settings": len(search),
        "theory": theory.to_dict("records"),
        "agreement": agreement.to_dict("records"),
        "verdicts": verdicts.to_dict("records"),
    }
    path = _study.write_study(page, args.out, NAME, "Selection phase diagram (gih)", summary)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(agreement.to_string(index=False))
        print(verdicts.to_string(index=False))
    print(f"report: {path}")
    return summary


def agreement_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (setting, init), group in runs.groupby(["setting", "init"], sort=False):
        counts = Counter(group["trained_S*"])
        row = {"setting": setting, "init": init, "n": len(group),
               "trained S* (runs)": ", ".join(f"{s}×{k}" for s, k in counts.most_common()),
               "p_top mean": group["p_top"].mean(), "p_parents mean": group["p_parents"].mean(),
               f"runs with p_top >= {CONCENTRATED}": int(group["concentrated"].sum()),
               "model/Bayes mean": group["model_over_bayes"].mean(),
               "loss model": group["loss_model"].mean(), "loss Bayes": group["loss_bayes"].mean(),
               "loss parents-gram": group["loss_parents_gram"].mean()}
        for criterion in CRITERIA:
            k, n = int(group[f"{criterion}.predicts"].sum()), len(group)
            low, high = wilson_interval(k, n)
            row[f"{criterion} S*"] = group[f"{criterion}.S*"].iloc[0]
            row[f"p[{criterion} S*] mean"] = group[f"p_{criterion}_S*"].mean()
            row[f"{criterion} rate"] = k / n
            row[f"{criterion} interval"] = f"[{low:.2f}, {high:.2f}]"
            row[f"loss {criterion} S*-gram"] = group[f"loss_{criterion}_S*_gram"].mean()
        rows.append(row)
    return pd.DataFrame(rows)


def verdict_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per criterion and way of counting (its S* exactly; its S* or a set tied with it within 2
    paired stderr): runs predicted k of n with a Wilson interval, and the (setting, init) cells
    where more than half the runs agree."""
    rows = []
    concentrated = runs[runs["concentrated"]]
    for criterion in CRITERIA:
        for frame, column, counting in (
            (runs, f"{criterion}.predicts", "S* exactly"),
            (runs, f"{criterion}.predicts_within_ties", "S* or a tied set"),
            (concentrated, f"{criterion}.predicts", f"S* exactly, runs with p_top >= {CONCENTRATED}"),
        ):
            k, n = int(frame[column].sum()), len(frame)
            low, high = wilson_interval(k, n)
            by_setting = frame.groupby(["setting", "init"])[column].mean()
            rows.append({"criterion": criterion, "counting": counting, "runs predicted": f"{k} of {n}",
                         "rate": k / n if n else math.nan, "interval": f"[{low:.2f}, {high:.2f}]",
                         "cells (setting × init) where most runs agree": f"{int((by_setting > 0.5).sum())} of {len(by_setting)}"})
    return pd.DataFrame(rows)


def agreement_figure(agreement: pd.DataFrame) -> tuple[go.Figure, pd.DataFrame]:
    fig = go.Figure()
    for criterion in CRITERIA:
        for init, part in agreement.groupby("init", sort=False):
            fig.add_bar(name=f"{criterion} ({init})", x=part["setting"], y=part[f"{criterion} rate"])
    fig.update_layout(barmode="group", yaxis_title="runs whose trained S* = criterion's S*", yaxis_range=[0, 1])
    return fig, agreement


def intro_search(search: pd.DataFrame) -> str:
    n = int((~search["agree"]).sum())
    return (f"<p>d = 3, window 3, D = 2, weak-parent priors; {len(search)} settings, the criteria disagree "
            f"in {n}. Gap: the runner-up's paired difference from S* (± stderr).</p>")


def intro_theory() -> str:
    return ("<p>Monte Carlo over prior kernels (mean ± stderr over kernels); gap: the runner-up's "
            "paired difference from S* (± stderr). The modified criterion is the one in the authors' "
            "reference code (<code>RPE/utils.py</code> <code>chi_square_mutual_info</code>, power 2).</p>")


if __name__ == "__main__":
    main()
