"""The layout contract: generic code reads what a model's cfg declares, never its class.

Truths: a TransformerBridge booted here with TransformerLens's own `boot_native` (no project
attribute on its cfg) must analyse and patch exactly like the same weights built by the project's
`build_standard`, and its activation patching must equal TransformerLens's own patching functions.
The source test walks the package's syntax trees: outside ``interp_icl/models`` no module may name
the family checks or the concrete model classes.
"""

import ast
import contextlib
import io
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
import transformer_lens.model_bridge.sources  # noqa: F401  (attaches TransformerBridge.boot_native)
from transformer_lens import patching as tl_patching
from transformer_lens.config import TransformerBridgeConfig
from transformer_lens.model_bridge import TransformerBridge

import interp_icl
from interp_icl.analysis.pipeline import AnalysisSettings, analyze_model
from interp_icl.config import ModelConfig
from interp_icl.models import build_model, layout, next_token_log_probs
from interp_icl.models.layout import ModelLayout
from interp_icl.models.standard import build_standard
from interp_icl.patching import Target, activation_patching, target_loss
from interp_icl.tasks import make_task
from tests.conftest import tiny_config

N_CTX = 24
FORBIDDEN = {
    "is_gih",
    "is_regression_block",
    "GIHModel",
    "TransformerBridge",
    "LinearSelfAttention",
    "RegressionBlock",
    "ICLClassifier",
}


def user_bridge(seed: int = 0) -> TransformerBridge:
    """A 2-layer bridge made the TransformerLens way, outside the project's builders."""
    cfg = TransformerBridgeConfig(
        d_model=16, d_head=8, n_heads=2, n_layers=2, n_ctx=N_CTX, d_vocab=3, d_mlp=32,
        act_fn="relu", normalization_type="LN", positional_embedding_type="standard",
        seed=seed, device="cpu",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return TransformerBridge.boot_native(cfg)


@pytest.fixture(scope="module")
def pair():
    """(the user's bridge, the project's standard model with the same weights), and the task."""
    config = tiny_config()
    task = make_task(config.task)
    ours = build_standard(config.model, task.vocab_size, N_CTX, seed=3)
    theirs = user_bridge()
    theirs.load_state_dict(ours.state_dict())
    return theirs.eval(), ours.eval(), task


def test_a_plain_bridge_gets_the_default_layout(pair):
    theirs, ours, _ = pair
    assert layout(theirs) == ModelLayout(n_layers=2)
    shape = layout(theirs)
    assert (shape.output, shape.target_offset, shape.window, shape.max_degree) == ("logits", 1, None, None)
    assert shape.copier_layers == (0,) and shape.classifier_layer == 1 and shape.has_circuit
    assert shape.compared_feature == "blocks.1.hook_resid_pre"
    assert layout(ours) == ModelLayout(n_layers=2, training_module="original_model")


def test_the_projects_families_declare_their_layouts():
    gih = build_model(ModelConfig(family="gih", n_heads=2, window=3, max_degree=2), 3, N_CTX, 0)
    shape = layout(gih)
    assert (shape.output, shape.target_offset, shape.window, shape.max_degree) == ("probs", 0, 3, 2)
    assert shape.compared_feature == "blocks.0.mlp.hook_feature" and not shape.direct_path
    assert shape.last_forward == "forward_last" and shape.block_type == "gih"
    lsa = build_model(ModelConfig(family="lsa"), 5, 13, 0)
    assert layout(lsa).input == "vectors" and layout(lsa).block_type == "linear_attention"
    block = build_model(ModelConfig(family="block"), 5, 13, 0)
    assert layout(block).input == "vectors" and layout(block).block_type == "transformer"


def test_a_plain_bridge_predicts_like_the_projects_model(pair):
    theirs, ours, task = pair
    tokens = task.sample(8, torch.Generator().manual_seed(0)).tokens
    for last_only in (False, True):
        torch.testing.assert_close(
            next_token_log_probs(theirs, tokens, last_only),
            next_token_log_probs(ours, tokens, last_only),
            atol=1e-5,
            rtol=1e-5,
        )


def test_a_plain_bridge_analyses_like_the_projects_model(pair):
    theirs, ours, task = pair
    settings = AnalysisSettings(n_sequences=32, n_kernels=20)
    a, b = analyze_model(theirs, task, settings), analyze_model(ours, task, settings)
    assert set(a.results) == set(b.results) == {"copier", "selector", "classifier", "head_scores", "theory"}
    pd.testing.assert_frame_equal(a.table(), b.table(), check_exact=False, rtol=1e-4, atol=1e-5)
    assert a.headline() == b.headline()


def test_a_plain_bridge_patches_like_transformer_lens(pair):
    theirs, ours, _ = pair
    generator = torch.Generator().manual_seed(1)
    clean = torch.randint(0, 3, (4, 12), generator=generator)
    corrupted = torch.randint(0, 3, (4, 12), generator=generator)
    metric = target_loss(theirs, clean)
    oracles = {
        ("resid_pre", "pos"): tl_patching.get_act_patch_resid_pre,
        ("z", "pos"): tl_patching.get_act_patch_attn_head_out_by_pos,
        ("pattern", "all"): tl_patching.get_act_patch_attn_head_pattern_all_pos,
    }
    _, clean_cache = theirs.run_with_cache(clean)
    for (site, by), oracle in oracles.items():
        with contextlib.redirect_stderr(io.StringIO()):  # TransformerLens's tqdm bar
            expected = oracle(theirs, corrupted, clean_cache, lambda out: metric(out).mean())
        result = activation_patching(theirs, clean, corrupted, Target(site, by), metric)
        assert (result.mean - expected).abs().max().item() < 1e-5, site
        same = activation_patching(ours, clean, corrupted, Target(site, by), target_loss(ours, clean))
        torch.testing.assert_close(result.values, same.values, atol=1e-5, rtol=1e-5)


def _names(tree: ast.AST) -> set[str]:
    """Every identifier a module uses: names, attributes, imported names and their aliases."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            found.add(node.id)
        elif isinstance(node, ast.Attribute):
            found.add(node.attr)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                found.update({alias.name.split(".")[-1], alias.asname or ""})
    return found - {""}


def test_no_module_outside_models_names_a_model_class():
    package = Path(interp_icl.__file__).parent
    offenders = {}
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] == "models":
            continue
        used = _names(ast.parse(path.read_text(), filename=str(path))) & FORBIDDEN
        if used:
            offenders[str(path.relative_to(package))] = sorted(used)
    assert not offenders, f"only interp_icl/models may look at model classes: {offenders}"
