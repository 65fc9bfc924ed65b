"""Building blocks of the Jupyter dashboards in ``dashboards/`` (the notebooks stay thin).

Position conventions (docs/analysis.md): row i of a model's attention pattern is the query at
position i, which predicts token ``t = i + target_offset`` (1 for TransformerLens models, 0 for the
gih model, whose row t is the query slot of token t). A task's parents ``pa`` are distances back
from a token: x_t depends on x_{t-p}, p in pa.

- Layer 1 (``blocks.0``) copies earlier tokens: a copier for parent p attends from i to i - p, so
  that position i holds the parent tokens of x_i (the key side of layer 2; in a TransformerLens
  model the query side gets the same tokens of the target i + 1 from offsets p - 1, parent 1 from
  the residual stream itself).
- Layer 2 (``blocks.1``) attends from the query of target t to keys l <= t - 1 whose parent tokens
  all equal the target's, x_{l-p} = x_{t-p} for every p in pa (*full matches*), and copies x_l.
  Attending uniformly to the full matches is the in-context pa-gram estimator.

`attention_figure` draws both layers' patterns for one sequence with these positions marked and
returns the plotted numbers as a tidy DataFrame; `marker_summary` says how much attention lands on
the marks. `run_dir` resolves the run a dashboard shows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots
from torch import Tensor, nn

from interp_icl.analysis.common import check_tokens_for, hook_cache
from interp_icl.analysis.result import set_text
from interp_icl.errors import CheckpointError, require
from interp_icl.models import target_offset
from interp_icl.seeding import generator

RUN_ENV = "INTERP_ICL_RUN"  # the run the dashboards show
SMALL_ENV = "INTERP_ICL_SMALL"  # "1": tiny sizes, for executing the notebooks in the test suite
DEFAULT_RUN = "runs/quickstart"
SWEEP_ENV = "INTERP_ICL_SWEEP"  # the sweep directory the sweep dashboard shows
DEFAULT_SWEEP = "sweeps/quickstart_seeds"
LAYER_NAMES = ("layer 1 (blocks.0)", "layer 2 (blocks.1)")
MARKS = ("parent position i − p", "full match of the parents")


def repo_root(start: str | Path | None = None) -> Path:
    """The nearest of `start` (default: the working directory) and its parents that holds
    ``dashboards/`` and ``pyproject.toml``; `start` itself if none does. A notebook's kernel starts
    in ``dashboards/`` (Jupyter's default) or wherever the user launched it; both resolve."""
    here = Path(start if start is not None else Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "dashboards").is_dir() and (candidate / "pyproject.toml").is_file():
            return candidate
    return here


def run_dir(run: str | Path | None = None, start: str | Path | None = None) -> Path:
    """The run directory a dashboard shows: `run`, else ``$INTERP_ICL_RUN``, else
    ``runs/quickstart``; a relative path is taken relative to the repository root."""
    how = "train it (`interp-icl quickstart` writes runs/quickstart) or set {env} to a run directory"
    return _dashboard_dir(run, RUN_ENV, DEFAULT_RUN, "run directory", how, start)


def sweep_dir(sweep: str | Path | None = None, start: str | Path | None = None) -> Path:
    """The sweep directory the sweep dashboard shows: `sweep`, else ``$INTERP_ICL_SWEEP``, else
    ``sweeps/quickstart_seeds``; a relative path is taken relative to the repository root."""
    how = (f"run one (`interp-icl sweep analyses/sweeps/quickstart_seeds.json --out {DEFAULT_SWEEP}`) "
           "or set {env}")
    return _dashboard_dir(sweep, SWEEP_ENV, DEFAULT_SWEEP, "sweep directory", how, start)


def _dashboard_dir(given, env: str, default: str, what: str, how: str, start) -> Path:
    chosen = Path(given if given is not None else os.environ.get(env) or default).expanduser()
    path = chosen if chosen.is_absolute() else repo_root(start) / chosen
    require(path.is_dir(), f"{what} {path} does not exist; {how.format(env=env)}", CheckpointError)
    return path


def task_parents(task) -> tuple[int, ...]:
    """The task's parent offsets; ``(1,)`` (the induction-head structure) for a task without
    parents, such as repeated random tokens."""
    return tuple(int(p) for p in getattr(task, "parents", None) or (1,))


def sample_sequence(
    task, index: int = 0, seed: int = 0, pool: int = 64, most_varied: bool = True
) -> Tensor:
    """One sequence ``[T]`` of `task`: of ``max(pool, index + 1)`` sequences drawn with a generator
    seeded by (seed, "explorer"), the one at `index` — in draw order, or, with `most_varied`,
    ordered by `full_match_share` ascending (ties in draw order), so index 0 is the sequence whose
    parent contexts repeat least. Sparse kernels (small alpha) make many sequences nearly constant,
    where every key is a full match and the patterns show little. Same arguments, same tokens."""
    require(index >= 0, f"sequence index must be >= 0, got {index}")
    tokens = task.sample(max(pool, index + 1), generator(seed, "explorer")).tokens
    if most_varied:
        parents = task_parents(task)
        share = torch.tensor([full_match_share(seq, parents) for seq in tokens])
        tokens = tokens[torch.sort(share, stable=True).indices]
    return tokens[index]


def full_match_share(tokens: Tensor, parents: Sequence[int]) -> float:
    """Mean over rows i (predicting t = i + 1) of the share of keys 0..i that are full matches:
    the attention uniform attention would put on them; 1 for a constant sequence."""
    mask = full_match_mask(tokens, parents, 1)
    rows = torch.arange(mask.shape[0])
    return float((mask.sum(1) / (rows + 1)).mean())


def parent_mask(seq_len: int, parents: Sequence[int]) -> Tensor:
    """``[T, T]`` bool: ``mask[i, j]`` is True when ``j = i - p`` for a parent p (j >= 0)."""
    query = torch.arange(seq_len)[:, None]
    key = torch.arange(seq_len)[None, :]
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    for p in parents:
        mask |= key == query - int(p)
    return mask


def full_match_mask(tokens: Tensor, parents: Sequence[int], offset: int) -> Tensor:
    """``[T, T]`` bool: ``mask[i, l]`` is True when key l is a full match for the target
    ``t = i + offset`` predicted at row i: ``max(pa) <= l <= t - 1`` and ``x_{l-p} = x_{t-p}`` for
    every parent p (all of them inside the sequence; `tokens` is ``[T]``)."""
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    seq_len = tokens.shape[0]
    mask = torch.zeros(seq_len, seq_len, dtype=torch.bool)
    if not parents:
        return mask
    first, last = max(parents), min(parents)
    target = torch.arange(seq_len)[:, None] + offset  # [T, 1]
    key = torch.arange(seq_len)[None, :]  # [1, T]
    valid = (key >= first) & (key <= target - 1) & (target >= first) & (target - last < seq_len)
    mask = valid.clone()
    for p in parents:
        at_target = tokens[(target - p).clamp(0, seq_len - 1)]  # [T, 1]
        at_key = tokens[(key - p).clamp(0, seq_len - 1)]  # [1, T]
        mask &= at_target == at_key
    return mask


def attention_patterns(model: nn.Module, tokens: Tensor) -> list[Tensor]:
    """Per layer, the attention pattern ``[H, T, T]`` (query, key) of one sequence `tokens` ``[T]``
    (the model's ``blocks.{l}.attn.hook_pattern``; layers may have different head counts)."""
    batch = check_tokens_for(model, torch.as_tensor(tokens).reshape(1, -1))
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.cfg.n_layers)]
    with torch.no_grad():
        cache = hook_cache(model, batch, names)
    return [cache[name][0] for name in names]


def pattern_table(
    patterns: Sequence[Tensor], tokens: Tensor, parents: Sequence[int], offset: int
) -> pd.DataFrame:
    """Tidy table of `patterns` (per layer ``[H, T, T]``) over keys ``<=`` queries.

    Columns: ``layer`` (0-based, as in hook names), ``head``, ``query``, ``key``, ``offset`` (query
    - key), ``query_token``, ``key_token``, ``attention`` (in [0, 1]; a row sums to 1 over its keys,
    or less in the gih model's layer 1) and ``marked``: in layer 1 the key is a parent position
    ``query - p`` (`parent_mask`), in later layers a full match (`full_match_mask`).
    """
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    seq_len = tokens.shape[0]
    query, key = torch.tril_indices(seq_len, seq_len)
    frames = []
    for layer, pattern in enumerate(patterns):
        mask = (
            parent_mask(seq_len, parents)
            if layer == 0
            else full_match_mask(tokens, parents, offset)
        )
        for head in range(pattern.shape[0]):
            frames.append(
                pd.DataFrame(
                    {
                        "layer": layer,
                        "head": head,
                        "query": query.numpy(),
                        "key": key.numpy(),
                        "offset": (query - key).numpy(),
                        "query_token": tokens[query].numpy(),
                        "key_token": tokens[key].numpy(),
                        "attention": pattern[head][query, key].double().numpy(),
                        "marked": mask[query, key].numpy(),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def attention_figure(
    model: nn.Module, tokens: Tensor, parents: Sequence[int], title: str = ""
) -> tuple[go.Figure, pd.DataFrame]:
    """Layer-1 (left) and layer-2 (right) attention of every head on one sequence ``[T]``.

    Rows of panels = heads; in a panel y = query position (0 at the top), x = key position, colour
    = attention weight in [0, 1] (blank: keys after the query). Dots mark each query's parent
    positions i - p in layer 1, diamonds the full matches of the target's parents in layer 2 (half
    a cell wide: zoom in to see the colour around them). Returns ``(figure, data)`` with `data` the
    `pattern_table` of the plotted patterns.
    """
    tokens = torch.as_tensor(tokens).reshape(-1).long()
    parents = tuple(int(p) for p in parents)
    patterns = attention_patterns(model, tokens)
    offset = target_offset(model)
    data = pattern_table(patterns, tokens, parents, offset)
    seq_len = tokens.shape[0]
    n_rows = max(p.shape[0] for p in patterns)
    n_cols = len(patterns)
    titles = [
        f"{LAYER_NAMES[layer] if layer < 2 else f'blocks.{layer}'} · L{layer}H{head}"
        if head < patterns[layer].shape[0]
        else ""
        for head in range(n_rows)
        for layer in range(n_cols)
    ]
    fig = make_subplots(
        rows=n_rows,
        cols=n_cols,
        subplot_titles=titles,
        horizontal_spacing=0.08,
        vertical_spacing=0.3 / n_rows,
    )
    size = max(2.0, min(8.0, 200 / seq_len))  # about half a cell: the colour stays visible
    shown = set()
    for (layer, head), part in data.groupby(["layer", "head"], sort=True):
        grid = np.full((seq_len, seq_len), np.nan)  # keys after the query stay blank
        grid[part["query"].to_numpy(), part["key"].to_numpy()] = part["attention"].to_numpy()
        row, col = int(head) + 1, int(layer) + 1
        fig.add_trace(
            go.Heatmap(
                z=grid.round(4),
                coloraxis="coloraxis",
                customdata=_token_pairs(tokens),
                hovertemplate=(
                    "query %{y} (token %{customdata[0]}), key %{x} (token %{customdata[1]})"
                    ": %{z:.3f}<extra></extra>"
                ),
            ),
            row=row,
            col=col,
        )
        marks = part[part["marked"]]
        mark = MARKS[0] if layer == 0 else MARKS[1]
        fig.add_trace(
            go.Scatter(
                x=marks["key"],
                y=marks["query"],
                mode="markers",
                marker={
                    "symbol": "circle" if layer == 0 else "diamond",
                    "color": "crimson" if layer == 0 else "darkorange",
                    "size": size,
                },
                name=mark,
                legendgroup=mark,
                showlegend=mark not in shown,
                hovertemplate=f"{mark}: query %{{y}}, key %{{x}}<extra></extra>",
            ),
            row=row,
            col=col,
        )
        shown.add(mark)
        fig.update_xaxes(title_text="key position", range=[-0.5, seq_len - 0.5], row=row, col=col)
        fig.update_yaxes(title_text="query position", range=[seq_len - 0.5, -0.5], row=row, col=col)
    heading = title or "attention by layer and head"
    fig.update_layout(
        title=f"{heading} (parents {set_text(parents)}; target of row i: token i + {offset})",
        coloraxis={"colorscale": "Blues", "cmin": 0, "cmax": 1, "colorbar": {"title": "attn"}},
        height=420 * n_rows + 120,
        width=460 * n_cols + 160,
        legend={"orientation": "h", "yref": "container", "y": 0, "yanchor": "bottom"},
        margin={"b": 110},
        plot_bgcolor="white",
    )
    return fig, data


def marker_summary(data: pd.DataFrame) -> pd.DataFrame:
    """Per layer and head of a `pattern_table`: how much attention lands on the marked keys.

    ``queries``: queries with at least one marked key; ``mass_on_marks``: attention summed over a
    query's marked keys, averaged over those queries (1 = all of it on the parent positions /
    full matches); ``uniform_share``: the same for uniform attention over keys 0..i (the chance
    level to compare with). One sequence: a description, not an estimate with error bars.
    """
    frame = data.assign(marked_attn=data["attention"] * data["marked"])
    per_query = frame.groupby(["layer", "head", "query"]).agg(
        marks=("marked", "sum"), mass=("marked_attn", "sum")
    )
    per_query = per_query[per_query["marks"] > 0].reset_index()
    per_query["uniform"] = per_query["marks"] / (per_query["query"] + 1)
    out = per_query.groupby(["layer", "head"]).agg(
        queries=("query", "size"), mass_on_marks=("mass", "mean"), uniform_share=("uniform", "mean")
    )
    out = out.reset_index()
    out.insert(
        2, "marks", ["parent positions" if layer == 0 else "full matches" for layer in out["layer"]]
    )
    return out


def top_effects(table: pd.DataFrame, k: int = 10) -> pd.DataFrame:
    """The `k` rows of a patching table (`PatchResult.table`) with the largest |effect|, where
    effect = metric of the patched run - metric of the unpatched base run (same units as the
    metric, e.g. nats for a loss), ± its paired stderr over sequences."""
    order = table["effect"].abs().sort_values(ascending=False, kind="stable").index
    return table.loc[order].head(k).reset_index(drop=True)


def _token_pairs(tokens: Tensor) -> list[list[list[int]]]:
    """customdata ``[T, T, 2]``: (query token, key token) of every cell."""
    values = tokens.tolist()
    return [[[q, k] for k in values] for q in values]
