"""Reddy (ICLR 2024)'s in-context classifier network (REFERENCE §3), a `HookedRootModule`.

Input: ``x`` ``[B, T, D + T]`` float, T = 2N + 1 tokens (item, label, ..., item, label, target)
each carrying a D-dim vector and a one-hot position code (what
`interp_icl.tasks.classification.ClassificationTask.model_input` gives). With row vectors:

    r      = x W_E                                       (linear embedding, ``[B, T, d_model]``)
    r     ← r + Attn_l(r)          l = 0, 1              single-head causal softmax attention,
                                                         residual, no LayerNorm
    h_1    = relu(r_target W_1 + b_1), h_2 = relu(h_1 W_2 + b_2), h_3 = relu(h_2 W_3 + b_3)
    logits = h_3 W_U + b_U                               ``[B, L]`` at the target (last position)

The linear embedding is this implementation's choice (it lets d_model differ from D + T); the
reference code attends on the raw tokens. Initialisation: weights N(0, 1/fan_in) (W_U, W_O
scaled by 0.5), biases 0, drawn from a `torch.Generator`.

Hook points (B sequences, T positions, one head, k = d_head):
    hook_embed                          [B, T, d_model]
    blocks.{l}.hook_resid_pre           [B, T, d_model]
    blocks.{l}.attn.hook_q / hook_k / hook_v   [B, T, 1, k]
    blocks.{l}.attn.hook_attn_scores    [B, 1, T, T]    q·k/sqrt(k), -inf above the diagonal
    blocks.{l}.attn.hook_pattern        [B, 1, T, T]    softmax over keys
    blocks.{l}.attn.hook_z              [B, T, 1, k]
    blocks.{l}.hook_attn_out            [B, T, d_model]
    blocks.{l}.hook_resid_post          [B, T, d_model]
    mlp.hook_hidden_{i}, i = 1, 2, 3    [B, d_mlp]      post-ReLU activations at the target
    hook_logits                         [B, L]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint

from interp_icl.builtin_families import ClassifierConfig
from interp_icl.errors import require
from interp_icl.models.common import check_vectors
from interp_icl.models.regression_block import _Attention
from interp_icl.seeding import seeded


@dataclass
class ICLClassifierConfig:
    """Sizes of an `ICLClassifier`, exposed as ``model.cfg``. d_input = D + T (token width),
    n_labels = L, n_ctx = T (largest accepted sequence length)."""

    d_input: int
    n_labels: int
    n_ctx: int
    d_model: int = 64
    d_head: int = 64
    d_mlp: int = 128
    n_layers: int = 2
    n_heads: int = 1
    input: ClassVar[str] = "vectors"  # layout (`interp_icl.models.layout`)

    def __post_init__(self) -> None:
        for name in ("d_input", "n_ctx", "d_model", "d_head", "d_mlp"):
            value = getattr(self, name)
            require(value >= 1, f"{name} must be at least 1, got {value}")
        require(self.n_labels >= 2, f"n_labels must be at least 2, got {self.n_labels}")
        self.d_vocab = self.n_labels
        self.attn_scale = math.sqrt(self.d_head)


class _Block(nn.Module):
    def __init__(self, cfg: ICLClassifierConfig) -> None:
        super().__init__()
        self.attn = _Attention(cfg)
        for name in ("resid_pre", "attn_out", "resid_post"):
            setattr(self, f"hook_{name}", HookPoint())

    def forward(self, resid: Tensor) -> Tensor:
        resid = self.hook_resid_pre(resid)
        return self.hook_resid_post(resid + self.hook_attn_out(self.attn(resid)))


class _Readout(nn.Module):
    """Three ReLU layers and the linear classifier, applied to the target's residual."""

    def __init__(self, cfg: ICLClassifierConfig) -> None:
        super().__init__()
        widths = [cfg.d_model, cfg.d_mlp, cfg.d_mlp, cfg.d_mlp]
        for i in range(1, 4):
            setattr(self, f"W_{i}", nn.Parameter(torch.zeros(widths[i - 1], widths[i])))
            setattr(self, f"b_{i}", nn.Parameter(torch.zeros(widths[i])))
            setattr(self, f"hook_hidden_{i}", HookPoint())

    def forward(self, r: Tensor) -> Tensor:
        for i in range(1, 4):
            r = getattr(self, f"hook_hidden_{i}")(
                torch.relu(r @ getattr(self, f"W_{i}") + getattr(self, f"b_{i}"))
            )
        return r


class ICLClassifier(HookedRootModule):
    """Embedding, two single-head softmax attention layers with residuals, a three-layer ReLU
    MLP and a linear classifier at the target (module docstring)."""

    def __init__(self, cfg: ICLClassifierConfig, generator: torch.Generator | None = None):
        super().__init__()
        self.cfg = cfg
        self.W_E = nn.Parameter(torch.zeros(cfg.d_input, cfg.d_model))
        self.hook_embed = HookPoint()
        self.blocks = nn.ModuleList([_Block(cfg) for _ in range(cfg.n_layers)])
        self.mlp = _Readout(cfg)
        self.W_U = nn.Parameter(torch.zeros(cfg.d_mlp, cfg.n_labels))
        self.b_U = nn.Parameter(torch.zeros(cfg.n_labels))
        self.hook_logits = HookPoint()
        self.reset_parameters(generator)
        self.setup()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Weights N(0, gain²/fan_in) (gain 0.5 for W_O and W_U), biases 0; `generator` defaults
        to ``seeded(0)``."""
        if generator is None:
            generator = seeded(0)
        gain = {"W_O": 0.5, "W_U": 0.5}
        with torch.no_grad():
            for name, param in self.named_parameters():
                leaf = name.rsplit(".", 1)[-1]
                if leaf.startswith("W_"):
                    fan_in = param.shape[-2] * (param.shape[0] if leaf == "W_O" else 1)
                    draw = torch.randn(param.shape, generator=generator, dtype=torch.float64)
                    param.copy_(draw * gain.get(leaf, 1.0) / math.sqrt(fan_in))
                else:
                    param.zero_()

    def check_input(self, x: Tensor) -> Tensor:
        """``x`` ``[B, T, D + T]`` float -> the same in the model's dtype; TokenError otherwise."""
        return check_vectors(x, self.cfg.d_input, self.cfg.n_ctx).to(self.W_E.dtype)

    def residual(self, x: Tensor) -> Tensor:
        """The residual stream after both attention layers ``[B, T, d_model]``."""
        resid = self.hook_embed(self.check_input(x) @ self.W_E)
        for block in self.blocks:
            resid = block(resid)
        return resid

    def forward(self, x: Tensor) -> Tensor:
        """Logits over the L labels at the target (last position) ``[B, L]``."""
        hidden = self.mlp(self.residual(x)[:, -1])
        return self.hook_logits(hidden @ self.W_U + self.b_U)

    def predict(self, x: Tensor) -> Tensor:
        """Same as `forward`: logits ``[B, L]`` at the target."""
        return self.forward(x)


def build_classifier(model: ClassifierConfig, d_vocab: int, n_ctx: int, seed: int) -> ICLClassifier:
    """The registered build function of the classifier family: `d_vocab` is the classification
    task's token width D + T + 1 (the label-id channel included, so the model reads D + T); the
    label count comes from ``model.n_labels`` (filled from task.n_labels by RunConfig)."""
    require(
        model.n_labels is not None,
        "model.n_labels is unset; build the classifier from a RunConfig or set it",
    )
    cfg = ICLClassifierConfig(
        d_input=d_vocab - 1,
        n_labels=model.n_labels,
        n_ctx=n_ctx,
        d_model=model.d_model,
        d_head=model.d_head,
        d_mlp=model.d_mlp,
    )
    return ICLClassifier(cfg, seeded(seed))
