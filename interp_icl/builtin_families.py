"""Config types of the built-in model families, registered by name (torch-free: each family's
model and build function live in ``interp_icl.models.<module>`` and are imported when a model is
built).

Every field's bounds are pydantic constraints (they appear in `interp_icl.config.config_schema`);
rules that tie fields together are model validators, rules that need the task are
`check_with_task`; all raise one-line `ConfigError`s.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from interp_icl.errors import require
from interp_icl.registry import FamilyConfigBase, TaskConfigBase, register_family

Norm = Literal["LN", "none"]
Activation = Literal["relu", "gelu", "gelu_new", "silu"]
GIH_PARAM_GROUPS = ("rpe", "ffn", "a")


class StandardConfig(FamilyConfigBase):
    """TransformerLens-native transformer (``TransformerBridge.boot_native``) of `n_layers`
    layers (1 to 3: the copier pass reads every layer before the last, the classifier the last;
    a 1-layer model has no two-layer circuit), `n_heads` heads of size `d_head` per
    layer, residual width `d_model`, MLP width `d_mlp` (none when `attn_only`), LayerNorm or none,
    standard or rotary positions (rotary needs an even d_head), activation `act_fn`."""

    not_in_release_1 = frozenset({"n_layers"})  # release 1: always 2 layers
    family: Literal["standard"] = "standard"
    n_layers: int = Field(2, ge=1, le=3)
    n_heads: int = Field(2, ge=1)
    d_model: int = Field(64, ge=1)
    d_head: int = Field(32, ge=1)
    d_mlp: int = Field(256, ge=1)
    attn_only: bool = False
    norm: Norm = "LN"
    positional: Literal["standard", "rotary"] = "standard"
    act_fn: Activation = "relu"

    @model_validator(mode="after")
    def _fits(self) -> StandardConfig:
        require(
            self.positional != "rotary" or self.d_head % 2 == 0,
            f"rotary positions need an even model.d_head, got {self.d_head}",
        )
        return self


class GIHFamilyConfig(FamilyConfigBase):
    """The generalized-induction-head model TF(M, H, d, D) of Chen et al. 2024 (two layers):
    layer-1 window M = `window` (relative offsets 1..M), H = `n_heads` layer-1 heads, head subsets
    of size <= D = `max_degree` (0..n_heads). Initialisation (the reference code's): head h's
    position logits are `w_plus` at offset h+1 and `w_minus` elsewhere, every subset weight
    c_S = `c_init` (> 0; only c_S^2 matters), the layer-2 scale a = `a_init`. `rpe_noise` > 0 adds
    N(0, rpe_noise^2) to every position logit, drawn from the run seed (not in the reference code:
    with w_plus = w_minus it gives a non-aligned start whose heads are not all equal; identical
    heads stay identical under gradient descent). Staged training may train the parameter groups
    rpe, ffn and a."""

    family: Literal["gih"] = "gih"
    n_heads: int = Field(2, ge=1)
    window: int = Field(3, ge=1)
    max_degree: int = Field(2, ge=0)
    w_plus: float = 3.0
    w_minus: float = 0.1
    c_init: float = Field(0.01, gt=0)  # p_S = c_S^2 / sum c^2: 0 would give 0/0
    a_init: float = 0.01
    rpe_noise: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _fits(self) -> GIHFamilyConfig:
        require(
            self.max_degree <= self.n_heads,
            f"model.max_degree must be between 0 and n_heads ({self.n_heads}), "
            f"got {self.max_degree}",
        )
        return self

    def check_with_task(self, task: TaskConfigBase) -> GIHFamilyConfig:
        require(
            self.window < task.seq_len,
            f"model.window ({self.window}) must be smaller than task.seq_len ({task.seq_len})",
        )
        parents = getattr(task, "parents", None)
        require(
            not parents or max(parents) <= self.window,
            f"parent offset {max(parents or (0,))} lies beyond the gih window "
            f"({self.window}); raise model.window or drop that parent",
        )
        return self


class LSAConfig(FamilyConfigBase):
    """`n_layers` layers of linear self-attention on (x, y) tokens (von Oswald et al. 2023);
    weight entries start ~ N(0, init_variance / (n_layers * (d + 1))), init_variance > 0 (the
    model is multilinear in its weights: from all-zero weights it never moves)."""

    family: Literal["lsa"] = "lsa"
    n_layers: int = Field(1, ge=1)
    init_variance: float = Field(0.002, gt=0)  # all-zero weights get zero gradients


class BlockConfig(FamilyConfigBase):
    """`n_layers` pre-LN softmax attention + MLP blocks on (x, y) tokens with a linear embedding
    and readout and no positional embedding (Dherin et al. 2025's one-block model;
    `interp_icl.models.regression_block`). `attn_only` must stay false (the block has an MLP).
    `mlp_skip` true (default, this project's extension): the MLP output is added to the residual
    stream; false (the source's block, REFERENCE §4): it replaces the stream, so each block is
    r ← r + Attn(LN1(r)), then r ← MLP(LN2(r)) (the attention keeps its skip connection)."""

    family: Literal["block"] = "block"
    n_layers: int = Field(1, ge=1)
    n_heads: int = Field(2, ge=1)
    d_model: int = Field(64, ge=1)
    d_head: int = Field(32, ge=1)
    d_mlp: int = Field(256, ge=1)
    attn_only: bool = False
    norm: Norm = "LN"
    act_fn: Activation = "relu"
    mlp_skip: bool = True

    @model_validator(mode="after")
    def _fits(self) -> BlockConfig:
        require(not self.attn_only, "the block family has an MLP; set model.attn_only false")
        return self


class ClassifierConfig(FamilyConfigBase):
    """Reddy 2024's in-context classifier: a linear embedding to `d_model`, two single-head
    causal softmax attention layers (head size `d_head`) with residuals and no LayerNorm, three
    ReLU layers of width `d_mlp` and a linear readout over `n_labels` labels at the target
    (`interp_icl.models.icl_classifier`). `n_heads` must be 1; `n_labels` is taken from
    task.n_labels when null."""

    family: Literal["classifier"] = "classifier"
    n_heads: int = Field(1, ge=1)
    d_model: int = Field(64, ge=1)
    d_head: int = Field(32, ge=1)
    d_mlp: int = Field(256, ge=1)
    n_labels: int | None = Field(None, ge=2)

    @model_validator(mode="after")
    def _fits(self) -> ClassifierConfig:
        require(
            self.n_heads == 1,
            f"the classifier family has single-head attention; set model.n_heads 1, "
            f"got {self.n_heads}",
        )
        return self

    def check_with_task(self, task: TaskConfigBase) -> ClassifierConfig:
        n_labels = task.n_labels  # the classification task's
        require(
            self.n_labels in (None, n_labels),
            f"model.n_labels ({self.n_labels}) differs from task.n_labels ({n_labels}); "
            "set it null or equal",
        )
        return self if self.n_labels == n_labels else self.updated(n_labels=n_labels)


TOKEN_TASKS = ("markov", "repeated")
register_family("standard", StandardConfig, "interp_icl.models.standard:build_standard", TOKEN_TASKS)
register_family(
    "gih", GIHFamilyConfig, "interp_icl.models.gih:build_gih", TOKEN_TASKS, GIH_PARAM_GROUPS
)
register_family("lsa", LSAConfig, "interp_icl.models.linear_attention:build_lsa", ("regression",))
register_family("block", BlockConfig, "interp_icl.models.regression_block:build_block", ("regression",))
register_family(
    "classifier",
    ClassifierConfig,
    "interp_icl.models.icl_classifier:build_classifier",
    ("classification",),
)
