"""In-context learning as an implicit weight update of one transformer block (Dherin et al. 2025),
as a population study over seeds and both settings (issue 16, part 4).

Usage:

    python analyses/implicit_update.py [--quick] [--out DIR] [--workers 2] [--tasks 1024]

The sweep (``analyses/sweeps/implicit_update.json``, run with ``interp-icl sweep``) trains seeds
0, 1, 2 of two settings (REFERENCE §4), one zipped axis group so that each setting is its preset
exactly (apart from seed and name):

* ``extension`` (setting s000; this project's extension) — the `implicit-update` preset: one
  pre-LN softmax attention + MLP block *with* skip connections around both (family `block`) on
  in-context linear regression, d = 5, N = 20, x ~ U(-1, 1)^d, w ~ N(0, I), no noise; 5000 steps;
* ``source`` (setting s001; Dherin et al.'s own setting) — the `implicit-update-source` preset: the
  same block *without the MLP's skip connection* (``mlp_skip=False``, T_W = M_W ∘ A) and without a
  norm, x ~ N(0, I), w ~ N(0, I); 2500 steps. Without the MLP skip the bias shift ΔA is 0.

Then, for every finished run, in float64 on `--tasks` fresh tasks (seeded, independent of
training), with W the MLP's input weight (``blocks.0.mlp.W_in``, ΔW in the orientation that
multiplies the MLP input z):

(a) **equality**: the model's prediction with the context vs. the model run on the query token
    alone with W + ΔW and b_out + ΔA (`interp_icl.analysis.implicit_update`): max |Δŷ|, both
    losses (half squared error), the loss of the query alone without the update, rank of ΔW. The
    updated side is computed two ways: TransformerLens hooks on the real model
    (`query_alone_output`) for every task, and deepcopies of the model with ΔW written into their
    state dict for the first 64 tasks;
(b) **step norms** ‖ΔW(i) − ΔW(i−1)‖_F for i = 1..N context tokens consumed (mean over tasks),
    their log-log slope with a 95% bootstrap interval over tasks
    (`interp_icl.analysis.implicit_update.step_norm_slope`), the same slope for two controls —
    the block at initialisation (untrained, same seed) and a context whose examples grow as i
    ((x_i, y_i) multiplied by i) — and the loss of the model given the first i examples (= the
    loss of the query alone with W + ΔW(i), b_out + ΔA_i);
(c) **fine-tuning**: from the trained weights, W alone is fine-tuned by SGD on the task's own N
    context examples, one example per step in context order, each presented as the model sees a
    query without context — the token (x_i, 0) alone — with target y_i and loss ½(ŷ − y_i)²; after
    i steps the query (x_q, 0) alone is predicted with the fine-tuned W. Learning rates from a
    grid; one pass (i = 1..N, step for step against (b)) and 20 passes. Compared with the implicit
    update: query losses, and the cosine between the two weight changes' effect on the query,
    ΔW z_0 vs. ΔW_FT z_0 (the only part of a weight change the query's prediction sees).

Per setting, over its runs: how many runs' step-norm slope interval lies wholly below 0, how many
runs' trained slope is steeper than the untrained control's with disjoint intervals, how many
runs' growing-context control lies wholly above 0 (the control that shows the check can fail),
each as k/n with a 95% Wilson interval; the largest equality error and the mean slope.

Writes OUT/implicit_update.html (data in OUT/implicit_update_data/: runs.csv, population.csv,
fine_tuning.csv and the figures' data for the lowest seed of each setting) and
OUT/implicit_update.json (see ``analyses/_study.py``). ``--quick`` runs seed 0 of both settings
for a few steps on a few tasks (`QUICK`, `QUICK_AXES`, `QUICK_TASKS`): the study's mechanics only.
"""

from __future__ import annotations

import copy
import json
import math
import sys
import time
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _study

from interp_icl.analysis.implicit_update import (
    BlockWeights,
    attention_at_query,
    block_weights,
    implicit_weight_update,
    log_log_slope,
    query_alone_output,
    relative_difference,
    step_norm_slope,
    token_by_token_updates,
)
from interp_icl.models import build_model
from interp_icl.presets import implicit_update as implicit_update_preset
from interp_icl.presets import implicit_update_source as implicit_update_source_preset
from interp_icl.runs import load_run, rundir
from interp_icl.seeding import generator
from interp_icl.viz.report import ReportPage

NAME = "implicit_update"
LEARNING_RATES = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
N_EPOCHS = 20
N_COPIES = 64  # tasks checked with state-dict-edited deepcopies
N_TASKS = 1024
SETTINGS = {  # setting -> its preset (the sweep's zipped axes reproduce each exactly)
    "extension": implicit_update_preset,
    "source": implicit_update_source_preset,
}
# --quick: seed 0 of both settings, a few steps, a few tasks. The zipped axes keep two values each.
QUICK = {"train.eval_every": 20, "train.n_eval": 256, "train.warmup_steps": 10}
QUICK_AXES = {"train.steps": [60, 60], "train.checkpoint_every": [60, 60]}
QUICK_TASKS = 48


SETTING_TEXT = {
    "extension": "this project's extension: pre-LN block with skip connections around attention "
    "and MLP, x ~ U(−1, 1)^d, w ~ N(0, I)",
    "source": "Dherin et al.'s setting: no skip connection around the MLP, no norm, "
    "x ~ N(0, I), w ~ N(0, I)",
}


def readout(model: nn.Module, resid: Tensor) -> Tensor:
    """ŷ ``[...]`` of final residuals ``[..., d_model]`` (the model's linear readout)."""
    return (resid @ model.unembed.W_U.detach() + model.unembed.b_U.detach())[..., 0]


def half_se(prediction: Tensor, target: Tensor) -> float:
    return float(0.5 * (prediction - target).pow(2).mean())


def alone_parts(model: nn.Module, weights: BlockWeights, e: Tensor) -> tuple[Tensor, Tensor]:
    """For tokens ``e`` ``[B, M, D]`` each seen alone (no context): the block's residual after
    attention h ``[B, M, d_model]`` and the MLP input z = LN2(h) ``[B, M, d_model]``."""
    b, m, _ = e.shape
    x = (e @ model.embed.W_E.detach() + model.embed.b_E.detach()).reshape(b * m, 1, -1)
    visible = torch.ones(1, 1, dtype=torch.bool)
    h = x[:, 0] + attention_at_query(weights, x, 0, visible)[:, 0]
    return h.reshape(b, m, -1), weights.ln2(h).reshape(b, m, -1)


def alone_prediction(model: nn.Module, weights: BlockWeights, h: Tensor, pre: Tensor) -> Tensor:
    """ŷ ``[B, M]`` of tokens seen alone, given h (`alone_parts`) and the MLP pre-activation
    (h is added back only when the block has the MLP skip connection)."""
    return readout(model, weights.output(h, weights.act(pre) @ weights.W_out + weights.b_out))


@torch.no_grad()
def fine_tune(
    model: nn.Module,
    weights: BlockWeights,
    e: Tensor,
    lr: float,
    epochs: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """SGD on W_in alone over the context examples of ``e`` ``[B, N + 1, D]``, one example per
    step in context order, each example's x seen alone as a query, (x_i, 0), with target y_i;
    loss ½(ŷ − y_i)² per task (tasks are independent).

    The gradient of one example is rank one, z_i g_iᵀ (z_i the example's MLP input, g_i the loss
    gradient at the MLP pre-activation), so ΔW_in = Σ_i z_i c_iᵀ is kept as coefficients c
    ``[B, N, d_mlp]``. Returns c after `epochs` passes, the query's ŷ ``[N + 1, B]`` after each
    step i = 0..N of the first pass, and the context MLP inputs z ``[B, N, d_model]``.
    """
    context = e[:, :-1].clone()
    y = context[..., -1].clone()
    context[..., -1] = 0.0  # the example presented as a query would be: y slot 0
    h, z = alone_parts(model, weights, context)  # [B, N, d]
    h_q, z_q = alone_parts(model, weights, e[:, -1:])  # [B, 1, d]
    base = z @ weights.W_in + weights.b_in  # [B, N, d_mlp]
    base_q = z_q[:, 0] @ weights.W_in + weights.b_in  # [B, d_mlp]
    gram = z @ z.transpose(1, 2)  # [B, N, N]: z_j · z_i
    gram_q = torch.einsum("bd,bnd->bn", z_q[:, 0], z)  # [B, N]
    n = y.shape[1]
    coef = torch.zeros(*base.shape, dtype=base.dtype)
    query = [alone_prediction(model, weights, h_q[:, 0], base_q)]
    for epoch in range(epochs):
        for i in range(n):
            pre = base[:, i] + torch.einsum("bn,bnm->bm", gram[:, i], coef)
            with torch.enable_grad():
                pre = pre.requires_grad_(True)
                prediction = alone_prediction(model, weights, h[:, i], pre)
                loss = 0.5 * (prediction - y[:, i]).pow(2).sum()
                (grad,) = torch.autograd.grad(loss, pre)
            coef[:, i] -= lr * grad
            if epoch == 0:
                pre_q = base_q + torch.einsum("bn,bnm->bm", gram_q, coef)
                query.append(alone_prediction(model, weights, h_q[:, 0], pre_q))
    return coef, torch.stack(query), z


def fine_tune_final(
    model: nn.Module, weights: BlockWeights, e: Tensor, z: Tensor, coef: Tensor
) -> Tensor:
    """The query's ŷ ``[B]`` with ΔW_in = Σ_i z_i c_iᵀ (see `fine_tune`)."""
    with torch.no_grad():
        h_q, z_q = alone_parts(model, weights, e[:, -1:])
        pre = z_q[:, 0] @ weights.W_in + weights.b_in
        pre = pre + torch.einsum("bd,bnd,bnm->bm", z_q[:, 0], z, coef)
        return alone_prediction(model, weights, h_q[:, 0], pre)


def growing_context(e: Tensor) -> Tensor:
    """Control input: context example i of ``e`` ``[B, N + 1, D]`` multiplied by i = 1..N (still
    y_i = <w, x_i>; the query unchanged), so later examples are larger. ``[B, N + 1, D]``."""
    scale = torch.arange(1, e.shape[1], dtype=e.dtype)
    grown = e.clone()
    grown[:, :-1] *= scale[None, :, None]
    return grown


def step_norm_controls(untrained: nn.Module, model: nn.Module, e: Tensor) -> dict:
    """`step_norm_slope` (as dicts) of the untrained block on ``e`` and of the trained block on
    `growing_context` (e): does the slope check fail anywhere?"""
    with torch.no_grad():
        fresh = step_norm_slope(token_by_token_updates(untrained, e, 0, -1).step_norms)
        grown = step_norm_slope(token_by_token_updates(model, growing_context(e), 0, -1).step_norms)
    return {"untrained": fresh.as_dict(), "growing_context": grown.as_dict()}


def cosine(a: Tensor, b: Tensor) -> Tensor:
    """Row-wise cosine of ``[B, k]`` vectors ``[B]`` (NaN where either is zero)."""
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1))


def study(model: nn.Module, tokens: Tensor, task) -> dict:
    """Parts (a)-(c) of the module docstring on `tokens` ``[B, N + 1, d + 1]`` (float64)."""
    e, target = task.model_input(tokens), task.targets(tokens)
    n_points = e.shape[1] - 1
    weights = block_weights(model, 0)
    with torch.no_grad():
        # (a) equality
        y_context = model.predict(e)
        update = implicit_weight_update(model, e, 0, -1)
        y_updated = readout(model, query_alone_output(model, e, update))
        y_alone = model.predict(e[:, -1:])
        copies, copy_ = [], None
        for b in range(min(N_COPIES, e.shape[0])):
            copy_ = copy.deepcopy(model) if copy_ is None else copy_
            state = model.state_dict()
            state["blocks.0.mlp.W_in"] = state["blocks.0.mlp.W_in"] + update.delta_w_in[b]
            state["blocks.0.mlp.b_out"] = state["blocks.0.mlp.b_out"] + update.bias_shift[b]
            copy_.load_state_dict(state)
            copies.append(copy_.predict(e[b : b + 1, -1:])[0])
        y_copies = torch.stack(copies)
        singular = torch.linalg.svdvals(update.delta_w)
        rank_tol = max(update.delta_w.shape[-2:]) * torch.finfo(torch.float64).eps
        ranks = (singular > rank_tol * singular[:, :1]).sum(-1)
        rel = relative_difference(query_alone_output(model, e, update), update.resid_post)
        equality = {
            "max_abs_prediction_difference": float((y_updated - y_context).abs().max()),
            "max_abs_prediction_difference_copies": float(
                (y_copies - y_context[: len(copies)]).abs().max()
            ),
            "max_relative_block_output_difference": float(rel.max()),
            "loss_with_context": half_se(y_context, target),
            "loss_updated_without_context": half_se(y_updated, target),
            "loss_without_context_no_update": half_se(y_alone, target),
            "max_delta_w_rank": int(ranks.max()),
            "max_singular_ratio": float((singular[:, 1] / singular[:, 0]).max()),
            "mean_delta_w_relative_norm": float(
                (update.delta_w.flatten(1).norm(dim=-1) / weights.W_in.norm()).mean()
            ),
        }
        # (b) step norms and the loss with the first i examples
        steps = token_by_token_updates(model, e, 0, -1)
        step_norms = steps.step_norms  # [B, N]
        mean_steps = step_norms.mean(0)
        icl_loss = []
        for i in range(n_points + 1):
            shorter = torch.cat([e[:, :i], e[:, -1:]], dim=1)
            icl_loss.append(half_se(model.predict(shorter), target))
        per_task_slope = torch.tensor([log_log_slope(s) for s in step_norms])
        dynamics = {
            "mean_step_norms": [float(s) for s in mean_steps],
            "log_log_slope_of_mean": log_log_slope(mean_steps),
            "step_norm_slope": step_norm_slope(step_norms).as_dict(),
            "median_per_task_slope": float(per_task_slope.median()),
            "fraction_tasks_shrinking": float(
                (step_norms[:, -5:].mean(-1) < step_norms[:, :5].mean(-1)).double().mean()
            ),
            "icl_loss_by_examples": icl_loss,
        }
    # (c) fine-tuning W on the same examples
    with torch.no_grad():
        _, z_query = alone_parts(model, weights, e[:, -1:])
        implicit_effect = torch.einsum("bd,bdm->bm", z_query[:, 0], update.delta_w_in)
    rows, curves = [], []
    for lr in LEARNING_RATES:
        coef, query, z = fine_tune(model, weights, e, lr, 1)
        coef_many, query_many, _ = fine_tune(model, weights, e, lr, N_EPOCHS)
        with torch.no_grad():
            for i in range(n_points + 1):
                curves.append({"lr": lr, "examples": i, "loss": half_se(query[i], target)})
            ft_delta_w_in = torch.einsum("bnd,bnm->bdm", z, coef)  # [B, d_model, d_mlp]
            effect = torch.einsum("bd,bdm->bm", z_query[:, 0], ft_delta_w_in)
        rows.append(
            {
                "lr": lr,
                "loss_one_pass": half_se(query[-1], target),
                f"loss_{N_EPOCHS}_passes": half_se(
                    fine_tune_final(model, weights, e, z, coef_many), target
                ),
                "cosine_effect_on_query": float(cosine(effect, implicit_effect).nanmean()),
                "cosine_delta_w": float(
                    cosine(ft_delta_w_in.flatten(1), update.delta_w_in.flatten(1)).nanmean()
                ),
                "relative_norm_one_pass": float(
                    (ft_delta_w_in.flatten(1).norm(dim=-1) / weights.W_in.norm()).mean()
                ),
                "max_abs_pred_diff_vs_icl": float((query[-1] - y_context).abs().max()),
            }
        )
        del query_many
    fine_tuning = pd.DataFrame(rows)
    # the factored fine-tuned prediction against the real model with ΔW_FT written into W_in
    with torch.no_grad():
        lr_check = float(fine_tuning.loc[fine_tuning["loss_one_pass"].idxmin(), "lr"])
        coef, query, z = fine_tune(model, weights, e[:8], lr_check, 1)
        delta = torch.einsum("bnd,bnm->bdm", z, coef)
        real = []
        for b in range(8):
            edited = copy.deepcopy(model)
            edited.blocks[0].mlp.W_in.add_(delta[b])
            real.append(edited.predict(e[b : b + 1, -1:])[0])
        fine_tune_check = float((torch.stack(real) - query[-1]).abs().max())
    return {
        "equality": equality,
        "dynamics": dynamics,
        "fine_tuning": fine_tuning,
        "fine_tuning_curves": pd.DataFrame(curves),
        "fine_tune_check": fine_tune_check,
    }


def figures(page: ReportPage, result: dict, n_points: int, zero_loss: float, prefix: str = "") -> str:
    """The step-norm and loss-by-examples figures of one run; their data registered as
    ``<prefix>step_norms.csv`` and ``<prefix>loss_by_examples.csv``."""
    steps = result["dynamics"]["mean_step_norms"]
    norm_data = pd.DataFrame({"context_size": range(1, n_points + 1), "mean_step_norm": steps})
    fig_steps = go.Figure(go.Scatter(x=norm_data["context_size"], y=steps, mode="lines+markers"))
    fig_steps.update_xaxes(type="log", title_text="context tokens consumed i")
    fig_steps.update_yaxes(type="log", title_text="mean ‖ΔW(i) − ΔW(i−1)‖_F")
    fig_steps.update_layout(title="implicit update steps (mean over tasks)", height=380)

    curves = result["fine_tuning_curves"]
    icl = result["dynamics"]["icl_loss_by_examples"]
    fig_loss = make_subplots(rows=1, cols=1)
    fig_loss.add_trace(
        go.Scatter(
            x=list(range(n_points + 1)),
            y=icl,
            name="in context = W + ΔW(i)",
            line={"color": "black", "width": 3},
        )
    )
    for lr, group in curves.groupby("lr"):
        fig_loss.add_trace(
            go.Scatter(x=group["examples"], y=group["loss"], name=f"SGD on W, lr {lr:g}")
        )
    fig_loss.add_hline(y=zero_loss, line_dash="dash", annotation_text="zero predictor")
    fig_loss.update_yaxes(type="log", title_text="query loss (half squared error)")
    fig_loss.update_xaxes(title_text="examples used i")
    fig_loss.update_layout(title="in-context (implicit update) vs fine-tuning W by SGD", height=420)
    loss_data = pd.concat(
        [
            curves.assign(method="sgd"),
            pd.DataFrame(
                {"lr": math.nan, "examples": range(n_points + 1), "loss": icl, "method": "icl"}
            ),
        ]
    )
    return page.figure(fig_steps, f"{prefix}step_norms.csv", norm_data) + page.figure(
        fig_loss, f"{prefix}loss_by_examples.csv", loss_data
    )


def setting_of(config) -> str:
    """"extension" or "source", told apart by the MLP skip connection (the sweep's zipped axes
    change it together with the norm, the x distribution and the step counts)."""
    return "extension" if config.model.mlp_skip else "source"


def measure_run(run_dir: Path, n_tasks: int) -> dict:
    """One finished cell: `study` on `n_tasks` fresh seeded tasks in float64, the untrained-block
    and growing-context controls, and the task's baselines."""
    loaded = load_run(run_dir)
    model, task = loaded.model.double(), loaded.task
    batch = task.sample(n_tasks, generator(12345, "study", loaded.config.name))
    tokens = batch.tokens.double()
    result = study(model, tokens, task)
    untrained = build_model(
        loaded.config.model, task.vocab_size, task.seq_len, loaded.config.seed
    ).double()
    controls = step_norm_controls(untrained, model, task.model_input(tokens))
    metrics = loaded.metrics().dropna(subset=["eval_loss"])
    return {
        "config": loaded.config,
        "step": loaded.step,
        "final_eval_loss": float(metrics["eval_loss"].iloc[-1]),
        "result": result,
        "controls": controls,
        "baselines": task.baseline_losses(batch),
        "n_points": task.n_points,
    }


def run_row(cell: str, measured: dict) -> dict:
    """The per-run table's row."""
    config, result, controls = measured["config"], measured["result"], measured["controls"]
    eq, dyn, ft = result["equality"], result["dynamics"], result["fine_tuning"]
    best = ft.loc[ft["loss_one_pass"].idxmin()]
    fit, fresh, grown = dyn["step_norm_slope"], controls["untrained"], controls["growing_context"]
    row = {"cell": cell, "setting": setting_of(config), "seed": config.seed, "step": measured["step"],
           "final_eval_loss": measured["final_eval_loss"],
           "equality_max_abs_dy": max(eq["max_abs_prediction_difference"],
                                      eq["max_abs_prediction_difference_copies"]),
           "delta_w_rank": eq["max_delta_w_rank"]}
    for label, f in (("slope", fit), ("untrained_slope", fresh), ("growing_slope", grown)):
        row[label], row[f"{label}_low"], row[f"{label}_high"] = f["slope"], f["low"], f["high"]
    row.update({
        "fraction_tasks_shrinking": dyn["fraction_tasks_shrinking"],
        "ft_best_lr": float(best["lr"]),
        "ft_best_loss_one_pass": float(best["loss_one_pass"]),
        "ft_cosine_effect_on_query": float(best["cosine_effect_on_query"]),
        "icl_loss_all_N": dyn["icl_loss_by_examples"][-1],
        "zero_loss": measured["baselines"]["zero_loss"],
        "fine_tune_check": result["fine_tune_check"],
    })
    return row


def population_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per setting: the rates over its runs (module docstring), the largest equality
    error and the mean slope."""
    rows = []
    for setting in [s for s in SETTINGS if s in set(runs["setting"])]:
        group = runs[runs["setting"] == setting]
        row = {"setting": setting, "n_runs": len(group)}
        flags = {
            "slope interval below 0": group["slope_high"] < 0,
            "steeper than untrained (disjoint)": (group["slope"] < group["untrained_slope"])
            & (group["slope_high"] < group["untrained_slope_low"]),
            "growing-context interval above 0": group["growing_slope_low"] > 0,
        }
        for label, flag in flags.items():
            row[label], row[f"{label} k"] = _study.rate_text(flag), int(flag.sum())
        row["max equality |Δŷ|"] = float(group["equality_max_abs_dy"].max())
        row["mean slope"] = float(group["slope"].mean())
        row["mean untrained slope"] = float(group["untrained_slope"].mean())
        row["mean growing slope"] = float(group["growing_slope"].mean())
        rows.append(row)
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> dict:
    def extra(parser):
        parser.add_argument("--tasks", type=int, default=None,
                            help=f"fresh tasks per run (default {N_TASKS}; --quick: {QUICK_TASKS})")

    args = _study.parse_args(NAME, "In-context learning as an implicit weight update (issue 16)", argv, extra=extra)
    n_tasks = args.tasks or (QUICK_TASKS if args.quick else N_TASKS)
    spec = _study.committed_spec(NAME)
    if args.quick:
        spec = _study.quick_spec(spec, seeds=[0], config=QUICK, axes=QUICK_AXES)
    torch.set_grad_enabled(True)
    sweep, sweep_seconds = _study.run_sweep_command(spec, args.out, args.workers)
    started = time.perf_counter()
    dirs = _study.cell_dirs(sweep)
    measured = {cell: measure_run(run_dir, n_tasks) for cell, run_dir in dirs.items()}
    runs = pd.DataFrame([run_row(cell, m) for cell, m in measured.items()])
    population = population_table(runs)
    fine_tuning = pd.concat([
        m["result"]["fine_tuning"].assign(cell=cell, setting=setting_of(m["config"]), seed=m["config"].seed)
        for cell, m in measured.items()
    ])
    analysis_seconds = time.perf_counter() - started

    page = ReportPage()
    page.add("setting", "Setting", f"<pre>{json.dumps(spec, indent=1)}</pre><ul>"
             + "".join(f"<li>{s}: {SETTING_TEXT[s]}</li>" for s in SETTINGS)
             + f"</ul><p>{n_tasks} fresh tasks per run, float64. Sweep {sweep_seconds:.0f} s, "
             f"analysis {analysis_seconds:.0f} s.</p>")
    page.add("population", "Per setting", "<p>Step-norm slope: log-log slope of the mean "
             "‖ΔW(i) − ΔW(i−1)‖_F against i with a 95% bootstrap interval over tasks; rates are "
             "k/n runs with a 95% Wilson interval. Controls: the block at initialisation (same "
             "seed) and the trained block on a context whose examples grow as i (the check can "
             "fail there).</p>" + _study.table_html(page, population, "population.csv"))
    page.add("runs", "Every run", "<p>equality_max_abs_dy: max |ŷ with context − ŷ of the query "
             "alone with W + ΔW, b_out + ΔA| (hooks and edited copies); ft_*: fine-tuning W_in by "
             "SGD, one pass over the N examples, best learning rate on these tasks (optimistic "
             "for fine-tuning); icl_loss_all_N: the model's loss with all N examples.</p>"
             + _study.table_html(page, runs, "runs.csv"))
    page.add("fine_tuning", "Fine-tuning W by SGD, every run and learning rate",
             _study.table_html(page, fine_tuning, "fine_tuning.csv"))
    for setting in SETTINGS:
        cells = runs[runs["setting"] == setting].sort_values("seed")
        if cells.empty:
            continue
        first = cells.iloc[0]
        m = measured[first["cell"]]
        page.add(f"figures_{setting}", f"Figures: {setting}, seed {first['seed']}",
                 figures(page, m["result"], m["n_points"], m["baselines"]["zero_loss"], prefix=f"{setting}_"))
    summary = {
        "quick": args.quick,
        "tasks": n_tasks,
        "sweep_seconds": sweep_seconds,
        "analysis_seconds": analysis_seconds,
        "n_runs": len(runs),
        "runs": runs.to_dict("records"),
        "population": population.to_dict("records"),
        "per_run": {
            cell: {"equality": m["result"]["equality"], "dynamics": m["result"]["dynamics"],
                   "step_norm_controls": m["controls"], "baselines": m["baselines"],
                   "fine_tune_check": m["result"]["fine_tune_check"]}
            for cell, m in measured.items()
        },
        "versions": rundir.package_versions(),
    }
    path = _study.write_study(page, args.out, NAME, "In-context learning as an implicit weight update", summary)
    with pd.option_context("display.width", 250, "display.max_columns", 40, "display.float_format", "{:.4g}".format):
        for _, row in runs.iterrows():
            print(f"{row['setting']} seed {row['seed']}: slope {row['slope']:.2f} [{row['slope_low']:.2f}, "
                  f"{row['slope_high']:.2f}], untrained {row['untrained_slope']:.2f}, growing "
                  f"{row['growing_slope']:.2f}, equality {row['equality_max_abs_dy']:.1e}")
        print(population.to_string(index=False))
    print(f"sweep {sweep_seconds:.0f} s, analysis {analysis_seconds:.0f} s; report: {path}")
    return summary


if __name__ == "__main__":
    main()
