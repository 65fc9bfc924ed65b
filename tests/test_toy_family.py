"""A model family defined and registered in this file — no shared module edited — is trained,
loaded, analysed and patched by the toolkit like a built-in one.

The family is an attention-only TransformerLens-native bridge (`boot_native`) with its own config
type; it declares nothing about its layout, so everything runs on the defaults a plain
TransformerLens model gets.
"""

import math
import warnings
from typing import Literal

import pytest
import torch
import torch.nn.functional as F
from pydantic import Field

from interp_icl import registry
from interp_icl.analysis.pipeline import AnalysisSettings
from interp_icl.config import RunConfig
from interp_icl.patching.experiment import PatchSettings
from interp_icl.registry import FamilyConfigBase, register_family
from interp_icl.runs import analyze_checkpoint, create_run, load_run, run_patch, run_roles
from interp_icl.seeding import generator


class AttnOnlyConfig(FamilyConfigBase):
    """Attention-only toy: `width` = d_model, `heads` heads of width / heads each, 2 layers."""

    family: Literal["toy-attn"] = "toy-attn"
    width: int = Field(16, ge=2)
    heads: int = Field(2, ge=1)


def build_attn_only(config: AttnOnlyConfig, d_vocab: int, n_ctx: int, seed: int):
    import transformer_lens.model_bridge.sources  # noqa: F401  (attaches boot_native)
    from transformer_lens.config import TransformerBridgeConfig
    from transformer_lens.model_bridge import TransformerBridge

    cfg = TransformerBridgeConfig(
        d_model=config.width, d_head=config.width // config.heads, n_heads=config.heads, n_layers=2,
        n_ctx=n_ctx, d_vocab=d_vocab, attn_only=True, normalization_type="LN", seed=seed, device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_native(cfg)


@pytest.fixture
def toy_family():
    register_family("toy-attn", AttnOnlyConfig, build_attn_only, tasks=("markov",))
    yield
    registry._FAMILIES.pop("toy-attn", None)


def test_a_family_registered_here_trains_analyses_and_patches(toy_family, tmp_path):
    config = RunConfig.from_dict(
        {
            "name": "toy", "seed": 2,
            "task": {"vocab_size": 3, "parents": [1], "alpha": 0.5, "seq_len": 16},
            "model": {"family": "toy-attn", "width": 16, "heads": 2},
            "train": {"steps": 30, "batch_size": 16, "lr": 1e-2, "eval_every": 10, "n_eval": 64,
                      "checkpoint_every": 15},
        }
    )
    final = create_run(config, tmp_path / "toy", progress=False).run().final
    assert final["step"] == 30 and math.isfinite(final["eval_loss"])

    # the run directory holds the family's config and weights: the loaded model reproduces the
    # recorded held-out loss, computed here with plain TransformerLens logits
    run = load_run(tmp_path / "toy")
    assert isinstance(run.config.model, AttnOnlyConfig) and run.step == 30
    tokens = run.task.sample(config.train.n_eval, generator(config.seed, "eval")).tokens
    with torch.no_grad():
        logits = run.model(tokens)
    nll = F.cross_entropy(logits[:, :-1].reshape(-1, 3), tokens[:, 1:].reshape(-1))
    assert abs(nll.item() - final["eval_loss"]) < 1e-5

    analysis = analyze_checkpoint(tmp_path / "toy", "last", AnalysisSettings(n_sequences=16, n_kernels=20))
    assert {"copier", "selector", "classifier", "head_scores", "theory"} <= set(analysis.results)
    assert set(analysis.results["copier"].summary["heads"]) == {"L0H0", "L0H1"}
    assert analysis.results["classifier"].summary["layer"] == 1

    experiment = run_patch(tmp_path / "toy", "last", PatchSettings(n_sequences=8, attribution=False))
    table = experiment.result.table
    assert len(table) == 2 * 2 * 16 and table["effect"].notna().all()  # layer x head x position
    roles = run_roles(tmp_path / "toy", "last", n_sequences=8)
    assert set(roles.verdicts) == {"copier", "selector", "classifier"}
