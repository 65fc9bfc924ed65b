"""What a model's ``cfg`` declares about its layout, read in one place: `layout(model)`.

Analysis, patching and training code never looks at a model's class; it reads a `ModelLayout`.
Every field comes from the attribute of the same name on ``model.cfg`` when it is set there, else
from the default below, which describes a plain TransformerLens model (a `TransformerBridge` made
with ``boot_native`` outside this project works with no attribute set). The project's own model
classes set the attributes that differ on their cfg objects.

Fields (cfg attribute: meaning; default):
    output: what row t of ``model(tokens)`` ``[B, T, V]`` holds: "logits" (softmax gives the law)
        or "probs" (the law itself); "logits".
    target_offset: row t predicts token t + target_offset: 1 for TransformerLens logits, 0 for the
        gih model (row t is the query slot of token t); 1.
    window: the layer-1 attention's relative-position window M (a head at i sees i-1..i-M only),
        None when layer-1 attention is unrestricted (causal); None.
    max_degree: the largest parent set the compared feature can represent (gih: D), None when
        the architecture sets no bound; None.
    feature_hook: the hook holding the feature the last layer compares besides its q/k (gih: the
        FFN feature φ, ``blocks.0.mlp.hook_feature``); None means the last layer's input stream
        ``blocks.{n_layers-1}.hook_resid_pre``.
    attn_scores: where pre-softmax attention scores come from: "qk" (q·k / attn_scale from
        ``hook_q`` / ``hook_k`` with a causal mask; TransformerLens 4.3's bridge fires
        ``hook_attn_scores`` post-softmax) or "hook" (``hook_attn_scores`` holds them); "qk".
    direct_path: the layers communicate through a residual stream that each head writes with
        ``W_O`` (so the direct path-patching route exists); True.
    last_forward: name of a model method ``tokens [B, T] -> [B, V]`` giving, cheaply, the output
        row that predicts the last token; None (the full forward is used).
    training_module: name of the attribute holding the module the trainer calls (the standard
        family: "original_model", the same parameters with fewer wrapper calls); None = the model.
    input: "tokens" (integer ids ``[B, T]``) or "vectors" (float vectors ``[B, T, d]``, the
        regression and classification families); "tokens".
    block_type: "transformer" (TransformerLens attention + MLP or attention-only blocks), "gih"
        (relative-position copier + polynomial-feature FFN) or "linear_attention"; "transformer".

Derived: ``n_layers`` (``cfg.n_layers``), ``classifier_layer`` = n_layers - 1 (the layer whose
attention compares features), ``copier_layers`` = 0..n_layers-2 (the layers that copy tokens into
positions), ``has_circuit`` (n_layers >= 2: a copier -> classifier circuit can exist).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from torch import nn

NO_CIRCUIT = "a 1-layer model has no layer-2 attention: no copier -> classifier circuit can exist"


@dataclass(frozen=True)
class ModelLayout:
    n_layers: int
    output: str = "logits"
    target_offset: int = 1
    window: int | None = None
    max_degree: int | None = None
    feature_hook: str | None = None
    attn_scores: str = "qk"
    direct_path: bool = True
    last_forward: str | None = None
    training_module: str | None = None
    input: str = "tokens"
    block_type: str = "transformer"

    @property
    def classifier_layer(self) -> int:
        """The last layer: its attention compares features and copies the matching tokens."""
        return self.n_layers - 1

    @property
    def copier_layers(self) -> tuple[int, ...]:
        """Every layer before the last."""
        return tuple(range(self.n_layers - 1))

    @property
    def has_circuit(self) -> bool:
        return self.n_layers >= 2

    @property
    def compared_feature(self) -> str:
        """The hook of the feature the last layer compares (see `feature_hook`)."""
        return self.feature_hook or f"blocks.{self.classifier_layer}.hook_resid_pre"


def layout(model: nn.Module) -> ModelLayout:
    """The layout ``model.cfg`` declares, defaults filled in (see the module docstring)."""
    cfg = model.cfg
    names = [f.name for f in fields(ModelLayout) if f.name != "n_layers"]
    values = {n: getattr(cfg, n) for n in names if getattr(cfg, n, None) is not None}
    return ModelLayout(n_layers=int(cfg.n_layers), **values)
