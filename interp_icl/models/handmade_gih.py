"""Known-answer gih models: the limit model of REFERENCE §1 with hand-set weights.

`gih_for_parents(parents, ...)` builds TF(M, H, d, D) whose head h copies offset parents[h]
exactly (RPE weights ±sharpness), whose FFN puts all weight on the subset of those heads
(p_S = 1 for S = all parent heads) and whose classifier scale a is large, so its prediction is the
in-context S-gram estimator of the parent set. With ``distractor=True`` one more head copies the
smallest non-parent offset of the window, but no FFN weight uses it: the copier then copies a
non-parent that the selector must ignore. Tests and tutorials use these as ground truth.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from interp_icl.errors import require
from interp_icl.models.gih import GIHConfig, GIHModel


def gih_for_parents(
    parents: Sequence[int],
    vocab_size: int,
    n_ctx: int,
    window: int | None = None,
    distractor: bool = False,
    sharpness: float = 30.0,
    a: float = 200.0,
) -> GIHModel:
    """The exact limit model for `parents` (offsets >= 1, within the window).

    window: layer-1 window M (default max(parents)). Heads 0..|pa|-1 copy the parents in sorted
    order; with `distractor` head |pa| copies the smallest offset in 1..M that is not a parent.
    """
    offsets = sorted(set(parents))
    window = max(offsets) if window is None else window
    require(len(offsets) > 0 and offsets[0] >= 1, f"parents must be offsets >= 1, got {list(parents)}")
    require(max(offsets) <= window, f"parents {offsets} do not fit in the window M={window}")
    copied = list(offsets)
    if distractor:
        spare = [r for r in range(1, window + 1) if r not in offsets]
        require(spare, f"no non-parent offset in the window M={window} for a distractor head")
        copied.append(spare[0])
    cfg = GIHConfig(
        d_vocab=vocab_size, n_ctx=n_ctx, n_heads=len(copied), window=window, max_degree=len(offsets)
    )
    model = GIHModel(cfg)
    with torch.no_grad():
        model.w_rpe.fill_(-sharpness)
        for h, r in enumerate(copied):
            model.w_rpe[h, r - 1] = sharpness
        model.c.zero_()
        model.c[model.subsets.index(tuple(range(len(offsets))))] = 1.0
        model.a.fill_(a)
    return model
