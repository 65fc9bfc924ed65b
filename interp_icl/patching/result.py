"""`PatchResult`: per-sequence metric values of a sweep, as TransformerLens-shaped tensors and a
tidy DataFrame."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pandas as pd
import torch
from torch import Tensor


@dataclass
class PatchResult:
    """Metric values of every patch of a sweep.

    values:   ``[*shape, B]`` metric per patch and sequence.
    baseline: ``[B]`` the metric on the unpatched base run (corrupted run when denoising).
    source:   ``[B]`` the metric on the run the patches come from (clean run when denoising), or
              None for zero/mean ablations.
    axes:     names of the leading axes (TransformerLens `get_act_patch_*` order); ``layers[i]`` is
              the model layer at index i of the layer axis.
    """

    site: str
    axes: tuple[str, ...]
    layers: tuple[int, ...]
    values: Tensor
    baseline: Tensor
    source: Tensor | None = None
    metric: str = "metric"
    info: dict = field(default_factory=dict)

    @property
    def n(self) -> int:
        return int(self.values.shape[-1])

    @property
    def mean(self) -> Tensor:
        """``[*shape]`` the metric averaged over sequences (what `transformer_lens.patching` returns
        for a metric that averages over the batch)."""
        return self.values.mean(-1)

    @property
    def stderr(self) -> Tensor:
        """``[*shape]`` standard error of `mean` over sequences (NaN for one sequence)."""
        if self.n < 2:
            return torch.full_like(self.mean, math.nan)
        return self.values.std(-1, unbiased=True) / math.sqrt(self.n)

    @property
    def effect(self) -> Tensor:
        """``[*shape]`` mean change of the metric caused by the patch (patched - baseline)."""
        return (self.values - self.baseline).mean(-1)

    @property
    def effect_stderr(self) -> Tensor:
        """Paired standard error of `effect`."""
        if self.n < 2:
            return torch.full_like(self.mean, math.nan)
        return (self.values - self.baseline).std(-1, unbiased=True) / math.sqrt(self.n)

    @property
    def table(self) -> pd.DataFrame:
        """One row per patch: axis indices, mean, stderr, n, effect, effect_stderr, and `recovered`
        = (mean - baseline) / (source - baseline) when a source run exists."""
        shape = tuple(self.values.shape[:-1])
        index = (
            torch.cartesian_prod(*[torch.arange(s) for s in shape])
            if len(shape) > 1
            else torch.arange(shape[0])[:, None]
        )
        frame = pd.DataFrame(index.numpy(), columns=list(self.axes))
        if "layer" in frame:  # layer-axis index -> model layer (path results have no layer axis)
            frame["layer"] = [self.layers[i] for i in frame["layer"]]
        frame.insert(0, "site", self.site)
        frame["metric"] = self.metric
        frame["mean"] = self.mean.reshape(-1).numpy()
        frame["stderr"] = self.stderr.reshape(-1).numpy()
        frame["n"] = self.n
        frame["effect"] = self.effect.reshape(-1).numpy()
        frame["effect_stderr"] = self.effect_stderr.reshape(-1).numpy()
        if self.source is not None:
            gap = float((self.source - self.baseline).mean())
            frame["recovered"] = frame["effect"] / gap if gap != 0 else math.nan
        return frame

    @property
    def summary(self) -> dict:
        out = {
            "site": self.site,
            "axes": list(self.axes),
            "metric": self.metric,
            "n_sequences": self.n,
            "baseline_mean": float(self.baseline.mean()),
            **self.info,
        }
        if self.source is not None:
            out["source_mean"] = float(self.source.mean())
        return out
