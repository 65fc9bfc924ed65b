"""Analysis passes against models whose answer is known by construction."""

import math
import types

import pytest
import torch
from transformer_lens.head_detector import detect_head

from interp_icl.analysis.classifier import classifier, match_counts
from interp_icl.analysis.common import ActivationMemo, attention_scores, hook_cache, target_log_probs
from interp_icl.analysis.copier import copier
from interp_icl.analysis.head_scores import detection_patterns, head_scores, pattern_scores
from interp_icl.analysis.selector import select_by_gap, selector
from interp_icl.config import ModelConfig, TaskConfig
from interp_icl.errors import InterpICLError
from interp_icl.models import build_model, next_token_log_probs
from interp_icl.models.handmade_gih import gih_for_parents
from interp_icl.models.handmade_standard import induction_circuit
from interp_icl.tasks.markov import MarkovTask

SEQ = 61


def _batch(parents, n=64, seq=SEQ, seed=0):
    task = MarkovTask(TaskConfig(vocab_size=3, parents=tuple(parents), alpha=0.1, seq_len=seq))
    return task, task.sample(n, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("parents", [(1,), (1, 2), (1, 3), (2, 4)])
def test_every_pass_recovers_the_parents_of_a_handmade_gih_model(parents):
    task, batch = _batch(parents)
    model = gih_for_parents(parents, 3, SEQ, window=4)
    tokens = batch.tokens

    cop = copier(model, tokens, parents)
    assert cop.summary["copied_parent_offsets"] == list(parents)
    assert cop.summary["copied_equals_parents"]
    for head in cop.summary["heads"].values():
        assert head["sharpness"] > 0.99 and head["causal_offset"] == head["attn_offset"]

    sel = selector(model, tokens, parents)
    assert sel.summary["selected_offsets"] == list(parents)
    assert sel.summary["confident"] and sel.summary["margin"] > 0.9
    assert sel.summary["subset_weights"]["top_offsets"] == list(parents)
    assert sel.summary["subset_weights"]["top_weight"] == pytest.approx(1.0)

    cls = classifier(model, tokens, parents, tuple(sel.summary["selected_offsets"]), bayes_probs=task.bayes_probs(batch))
    label = "{" + ",".join(map(str, parents)) + "}-gram"
    assert cls.summary["closest_sgram"] == label and cls.summary["closest_sgram_is_parents"]
    head = cls.summary["heads"]["L1H0"]["parents"]
    assert head["full_match_mass"] > 0.999
    assert head["logit_gap"] == pytest.approx(200.0, rel=1e-4)  # the hand-set a
    assert head["r2"] == pytest.approx(1.0, abs=1e-6)


def test_selector_ignores_a_copier_that_the_ffn_does_not_use():
    parents = (1, 3)
    _, batch = _batch(parents)
    model = gih_for_parents(parents, 3, SEQ, window=4, distractor=True)  # head 2 copies offset 2
    assert copier(model, batch.tokens, parents).summary["copied_parent_offsets"] == [1, 2, 3]
    sel = selector(model, batch.tokens, parents)
    assert sel.summary["selected_offsets"] == [1, 3] and sel.summary["confident"]


def test_handmade_induction_circuit_is_found_by_every_pass():
    task, batch = _batch((1,), seq=41)
    model = induction_circuit(3, 41)
    tokens = batch.tokens

    heads = copier(model, tokens, (1,)).summary["heads"]
    assert heads["L0H0"]["is_copier"] and heads["L0H0"]["attn_offset"] == 1 and heads["L0H0"]["sharpness"] > 0.99
    assert not heads["L0H1"]["is_copier"]

    sel = selector(model, tokens, (1,)).summary
    assert sel["best_unit"] == "L1H1 q/k" and sel["selected_offsets"] == [1] and sel["confident"]
    assert not sel["units"]["L1H0 q/k"]["confident"]

    cls = classifier(model, tokens, (1,), (1,), bayes_probs=task.bayes_probs(batch)).summary
    assert cls["closest_sgram"] == "{1}-gram" and cls["best_head"] == "L1H1"
    assert cls["heads"]["L1H1"]["parents"]["logit_gap"] == pytest.approx(30.0, rel=1e-4)  # hand-set sharpness
    assert cls["heads"]["L1H0"]["parents"]["logit_gap"] == pytest.approx(0.0, abs=1e-9)

    scores = head_scores(model, n_sequences=16).summary
    assert scores["top_previous_token_head"] == "L0H0" and scores["previous_token_heads"] == ["L0H0"]
    assert scores["top_induction_head"] == "L1H1" and scores["induction_heads"] == ["L1H1"]
    assert scores["heads"]["L1H1"]["ov_copying"] == pytest.approx(1.0)
    assert scores["heads"]["L1H1"]["k_composition_from_L0H0"] > 0.5
    assert scores["heads"]["L1H1"]["k_composition_from_L0H1"] is None  # zero head: no composition


def test_random_models_make_no_confident_selection():
    _, batch = _batch((1, 2))
    for seed in range(3):
        model = build_model(ModelConfig(family="standard", d_model=32, d_head=16, d_mlp=64), 3, SEQ, seed)
        assert not selector(model, batch.tokens, (1, 2)).summary["confident"]
    gih = build_model(ModelConfig(family="gih", n_heads=3, window=4, max_degree=2), 3, SEQ, 0)  # reference init
    summary = selector(gih, batch.tokens, (1, 2)).summary
    assert not summary["confident"]
    assert summary["subset_weights"]["margin_to_second"] < 1e-6  # p_S uniform


def test_head_scores_equal_transformer_lens_detect_head():
    model = induction_circuit(3, 41)
    tokens = torch.randint(0, 3, (1, 30), generator=torch.Generator().manual_seed(0))
    # detect_head needs model.to_tokens; an identity "tokenizer" over token ids is all it uses
    wrapper = types.SimpleNamespace(cfg=model.cfg, to_tokens=lambda seq: seq, run_with_cache=model.run_with_cache)
    patterns = detection_patterns(tokens, 1)
    attention = [hook_cache(model, tokens, [f"blocks.{l}.attn.hook_pattern"])[f"blocks.{l}.attn.hook_pattern"] for l in range(2)]
    for name in ("previous_token", "duplicate_token", "induction"):
        mul = torch.stack([pattern_scores(a, patterns[name])[0][0] for a in attention])
        absolute = torch.stack([pattern_scores(a, patterns[name])[1][0] for a in attention])
        tl_mul = detect_head(wrapper, tokens, f"{name}_head", error_measure="mul")
        tl_abs = detect_head(wrapper, tokens, f"{name}_head", error_measure="abs")
        assert torch.allclose(mul, tl_mul.double(), atol=1e-6)
        assert torch.allclose(absolute, tl_abs.double(), atol=5e-4 + 1e-6)  # TL rounds "abs" to 3 decimals
    # the batched pass averages per-sequence scores, as detect_head does for a list of prompts
    batch = torch.randint(0, 3, (3, 30), generator=torch.Generator().manual_seed(1))
    ours = head_scores(model, tokens=batch).table
    ours = ours[(ours.metric == "induction_mul")].sort_values(["layer", "head"])["mean"].to_numpy()
    per_prompt = [detect_head(wrapper, b[None], "induction_head", error_measure="mul") for b in batch]
    tl = torch.stack(per_prompt).mean(0).flatten().double()
    assert torch.allclose(torch.tensor(ours), tl, atol=1e-6)


def test_gih_detection_patterns_use_the_latest_visible_token():
    tokens = torch.tensor([[0, 1, 0, 1]])
    p = detection_patterns(tokens, target_offset=0)
    # query slot t=3 (predicting x_3) sees x_2 = 0 last: duplicate key 0, induction key 1 (x_0 = 0)
    assert p["duplicate_token"][0, 3].tolist() == [1, 0, 0, 0]
    assert p["induction"][0, 3].tolist() == [0, 1, 0, 0]
    assert p["previous_token"][0, 3].tolist() == [0, 0, 1, 0]


def test_bridge_scores_are_rebuilt_because_hook_attn_scores_is_post_softmax():
    model = induction_circuit(3, 41)
    tokens = torch.randint(0, 3, (4, 20), generator=torch.Generator().manual_seed(2))
    scores, pattern = attention_scores(model, tokens, 1)
    hooked = hook_cache(model, tokens, ["blocks.1.attn.hook_attn_scores"])["blocks.1.attn.hook_attn_scores"]
    assert torch.allclose(hooked, pattern)  # TransformerLens 4.3 bridge: the "scores" hook sees the pattern
    assert torch.allclose(torch.softmax(scores, -1), pattern, atol=1e-5)
    assert float(scores[torch.isfinite(scores)].abs().max()) > 20  # real logits, not probabilities


def test_memo_shares_forwards_and_gives_identical_numbers():
    task, batch = _batch((1, 2))
    model = build_model(ModelConfig(family="standard", d_model=32, d_head=16, d_mlp=64), 3, SEQ, 0)
    memo = ActivationMemo(["blocks.0.attn.hook_z", "unembed.hook_out"])
    assert torch.allclose(target_log_probs(model, batch.tokens, memo), next_token_log_probs(model, batch.tokens), atol=1e-5)
    assert len(memo.entries) == 1
    with_memo = copier(model, batch.tokens, (1, 2), memo=memo).table
    without = copier(model, batch.tokens, (1, 2)).table
    assert torch.allclose(torch.tensor(with_memo["mean"].to_numpy()), torch.tensor(without["mean"].to_numpy()), atol=1e-6)


def test_match_counts_brute_force():
    tokens = torch.randint(0, 2, (2, 9), generator=torch.Generator().manual_seed(3))
    counts = match_counts(tokens, (1, 3))
    for b in range(2):
        for t in range(3, 9):
            for l in range(3, 9):
                expected = sum(int(tokens[b, t - d] == tokens[b, l - d]) for d in (1, 3))
                assert counts[b, t, l] == expected


def test_gap_selection():
    assert select_by_gap({1: 1.0, 2: 0.9, 3: 0.1, 4: 0.05}) == ([1, 2], pytest.approx(0.8))
    assert select_by_gap({1: 0.0, 2: 0.0}) == ([], 0.0)


def test_passes_reject_bad_input():
    model = gih_for_parents((1, 2), 3, SEQ, window=4)
    with pytest.raises(InterpICLError, match=r"token ids must lie in \[0, 2\]"):
        copier(model, torch.full((2, 20), 7), (1, 2))
    with pytest.raises(InterpICLError, match="at least"):
        selector(model, torch.zeros(2, 6, dtype=torch.long), (1, 2))
    with pytest.raises(InterpICLError, match="offsets must be >= 1"):
        classifier(model, torch.zeros(2, 20, dtype=torch.long), parents=(0, 1))
    assert not math.isnan(classifier(model, torch.zeros(2, 20, dtype=torch.long), (1, 2)).summary["model_nll"])
