"""Edge-level circuit scores (`interp_icl.circuits`): the head-granularity forward against the
model, exact edge patching against TransformerLens's own hooks, and EAP against TransformerLens
4.3's edge attribution."""

import importlib.util
import warnings
from pathlib import Path

import pytest
import torch

from interp_icl.circuits.forward import EdgeForward
from interp_icl.circuits.graph import Edge, standard_graph
from interp_icl.circuits.scores import eap_scores, exact_scores
from interp_icl.config import ModelConfig
from interp_icl.errors import InterpICLError
from interp_icl.models import build_model
from interp_icl.models.zoo import zoo, zoo_model

SEQ = 12


def last_log_prob(logits, tokens):
    """Per sequence: log-probability of token 0 at the last row (float64)."""
    return torch.log_softmax(logits[:, -1].double(), -1)[:, 0]


def tokens_pair(vocab, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, vocab, (batch, SEQ), generator=g), torch.randint(0, vocab, (batch, SEQ), generator=g)


@pytest.fixture(scope="module")
def standard():
    """Two layers with LayerNorm and MLPs, untrained: every edge matters a little."""
    return build_model(ModelConfig(family="standard", d_model=32, d_head=8, n_heads=2, d_mlp=64), 5, SEQ, 0).eval()


def test_the_graph_joins_every_sender_to_every_later_receiver(standard):
    graph = standard_graph(standard)
    # layer 0: 6 q/k/v receivers x embed; MLP0.in: embed + 2 heads; layer 1: 6 x (embed, 2 heads, MLP0);
    # MLP1.in: 6 senders; logits: all 7 senders
    assert len(graph.edges) == 6 + 3 + 24 + 6 + 7
    assert Edge("L1H0", "L0H1.q") not in graph.edges and Edge("L0H1", "L1H0.k") in graph.edges
    assert Edge("MLP1", "logits") in graph.edges and len(set(graph.edges)) == len(graph.edges)


@pytest.mark.parametrize("which", ["standard", "zoo"])
def test_the_head_granularity_forward_is_the_models_forward(standard, which):
    model = standard if which == "standard" else zoo_model("std-12", SEQ).build()
    tokens, _ = tokens_pair(int(model.cfg.d_vocab))
    logits, writes = EdgeForward(model).run(tokens)
    torch.testing.assert_close(logits, model(tokens), atol=1e-5, rtol=0)
    _, cache = model.run_with_cache(tokens)
    z, W_O = cache["blocks.0.attn.hook_z"], model.blocks[0].attn.W_O
    torch.testing.assert_close(writes["L0H1"], z[:, :, 1] @ W_O[1], atol=1e-5, rtol=0)


def patched_through_hooks(model, tokens, source, edge: Edge):
    """The exact edge patch computed with TransformerLens hooks only: the sender's write delta is
    added to the receiver layer's residual input, the receiving head's q/k/v (or the final
    residual) read off that run, and patched into the clean run."""
    layer, head = int(edge.sender[1]), int(edge.sender[3])
    z_name = f"blocks.{layer}.attn.hook_z"
    _, base = model.run_with_cache(tokens)
    _, src = model.run_with_cache(source)
    W_O = model.blocks[layer].attn.W_O[head]
    delta = (src[z_name][:, :, head] - base[z_name][:, :, head]) @ W_O
    unit, part = edge.receiver.split(".")
    r_layer, r_head = int(unit[1]), int(unit[3])

    def add(act, hook):
        return act + delta

    captured = {}

    def keep(act, hook):
        captured["x"] = act[:, :, r_head].clone()
        return act

    model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{r_layer}.hook_resid_pre", add),
                                            (f"blocks.{r_layer}.attn.hook_{part}", keep)])

    def put(act, hook):
        act = act.clone()
        act[:, :, r_head] = captured["x"]
        return act

    return model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{r_layer}.attn.hook_{part}", put)])


@pytest.mark.parametrize("receiver", ["L1H0.q", "L1H1.k", "L1H0.v"])
def test_exact_edge_patching_equals_the_same_patch_through_transformer_lens_hooks(standard, receiver):
    tokens, source = tokens_pair(5)
    graph = standard_graph(standard)
    edge = Edge("L0H1", receiver)
    ours = exact_scores(standard, graph, tokens, source, last_log_prob, edges=[edge])[0]
    with torch.no_grad():
        expected = last_log_prob(patched_through_hooks(standard, tokens, source, edge), tokens) - last_log_prob(standard(tokens), tokens)
    assert expected.abs().max() > 1e-4  # the edge matters on this model
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_exact_scores_do_not_depend_on_the_chunk(standard):
    tokens, source = tokens_pair(5)
    graph = standard_graph(standard)
    torch.testing.assert_close(exact_scores(standard, graph, tokens, source, last_log_prob, chunk=7),
                               exact_scores(standard, graph, tokens, source, last_log_prob, chunk=64), atol=1e-6, rtol=0)


def tiny_gpt2():
    """A randomly initialised 2-layer GPT-2 (ReLU) booted as a TransformerBridge offline: the
    attention class TransformerLens 4.3's edge attribution supports (it refuses the project's
    boot_native models: no per-head result hook)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformer_lens.model_bridge.sources.transformers.source import boot
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=7, n_positions=16, n_embd=16, n_layer=2, n_head=2, n_inner=32,
                        activation_function="relu", attn_implementation="eager")
    hf = GPT2LMHeadModel(config).eval()
    vocab = Tokenizer(models.WordLevel({f"t{i}": i for i in range(7)}, unk_token="t0"))
    vocab.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=vocab, unk_token="t0", pad_token="t0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return boot("gpt2", hf_model=hf, tokenizer=tokenizer).eval()


def tl_node_name(node) -> str:
    if node.kind in ("embed", "logits"):
        return node.kind
    if node.kind == "attn_head_out":
        return f"L{node.layer}H{node.head}"
    if node.kind == "mlp_out":
        return f"MLP{node.layer}"
    if node.kind == "mlp_in":
        return f"MLP{node.layer}.in"
    return f"L{node.layer}H{node.head}.{node.kind[0]}"


def test_eap_equals_transformer_lens_edge_attribution():
    from transformer_lens.tools.analysis.attribution_patching import (
        EdgeAttributionConfig,
        attribution_patch,
    )

    model = tiny_gpt2()
    clean, corrupt = tokens_pair(7, batch=3, seed=1)
    graph = standard_graph(model)
    result = attribution_patch(model, clean, corrupt, lambda logits: last_log_prob(logits, None).sum(),
                               EdgeAttributionConfig(granularity="edge"))
    theirs: dict[tuple[str, str], float] = {}
    for (writer, reader), score in result.edge_scores.items():  # per position: sum them
        key = (tl_node_name(writer), tl_node_name(reader))
        theirs[key] = theirs.get(key, 0.0) + score
    assert set(theirs) == {(e.sender, e.receiver) for e in graph.edges}
    ours = eap_scores(model, graph, corrupt, clean, last_log_prob).mean(1)  # base = their corrupt run
    expected = torch.tensor([theirs[(e.sender, e.receiver)] for e in graph.edges], dtype=ours.dtype)
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


def test_integrated_gradients_estimate_the_exact_scores_better_than_one_gradient(standard):
    tokens, source = tokens_pair(5, batch=16)
    graph = standard_graph(standard)
    exact = exact_scores(standard, graph, tokens, source, last_log_prob).mean(1)
    error = {k: float((eap_scores(standard, graph, tokens, source, last_log_prob, ig_steps=k).mean(1) - exact).abs().max())
             for k in (1, 16)}
    assert error[16] < error[1], error


def test_bad_input_is_refused(standard):
    tokens, source = tokens_pair(5)
    with pytest.raises(ValueError, match="ig_steps must be >= 1"):
        eap_scores(standard, standard_graph(standard), tokens, source, last_log_prob, ig_steps=0)
    gih = zoo_model("gih-12", SEQ).build()
    with pytest.raises(InterpICLError, match="edge scores need a standard-layout model"):
        EdgeForward(gih)


ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def zoo_table():
    spec = importlib.util.spec_from_file_location("circuit_zoo", ROOT / "analyses" / "circuit_zoo.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    from interp_icl.circuits.validation import zoo_recovery

    return script, zoo_recovery(zoo(script.N_CTX))


def test_every_stated_zoo_circuit_is_recovered_by_exact_patching_and_eap_ig(zoo_table):
    """Exact edge patching ranks every true edge above every other (AUC 1.0) on every zoo model
    with a stated circuit, positive and negative controls alike; EAP-IG reaches AUC >= 0.95 on each
    positive control. The standard positive controls are all there."""
    _, table = zoo_table
    exact = table[table["method"] == "exact"]
    assert (exact["auc"] == 1.0).all(), exact[exact["auc"] < 1.0]
    positives = table[(table["method"] == "eap-ig") & table["breaks"].isna()]
    assert (positives["auc"] >= 0.95).all(), positives
    stated = {m.name for m in zoo(48) if m.breaks is None}  # both families
    assert set(positives["model"]) == stated and {"gih-12", "gih-12-distractor"} <= stated
    assert set(table["model"]) == {m.name for m in zoo(48)}  # every zoo model has a stated circuit


def test_the_committed_recovery_table_is_what_the_script_writes(zoo_table):
    script, table = zoo_table
    committed = (ROOT / "docs" / "generated" / "circuit_zoo.md").read_text(encoding="utf-8")
    assert committed == script.fragment(table), "docs/generated/circuit_zoo.md is stale: run python analyses/circuit_zoo.py"
    assert '--8<-- "docs/generated/circuit_zoo.md"' in (ROOT / "docs" / "patching.md").read_text(encoding="utf-8")


def test_the_zoo_circuit_of_std_12_is_the_gih():
    """std-12's stated circuit, by hand: L0H0 copies offset 1 (slot S1), L0H1 offset 2 (S2); the
    classifier L1H0 compares offsets 1 and 2: query (token, S1), key (S1, S2), value token."""
    assert zoo_model("std-12", 48).circuit == {
        ("embed", "L0H0.v"), ("embed", "L0H1.v"),
        ("embed", "L1H0.q"), ("L0H0", "L1H0.q"), ("L0H0", "L1H0.k"), ("L0H1", "L1H0.k"),
        ("embed", "L1H0.v"), ("L1H0", "logits"),
    }


def test_circuit_runs_keeping_every_edge_or_none_are_the_model_on_each_input(standard):
    from interp_icl.circuits.faithfulness import circuit_metric

    tokens, source = tokens_pair(5)
    graph = standard_graph(standard)
    values = circuit_metric(standard, graph, tokens, source, last_log_prob, [graph.edges, []])
    with torch.no_grad():
        torch.testing.assert_close(values[0], last_log_prob(standard(tokens), tokens), atol=1e-6, rtol=0)
        torch.testing.assert_close(values[1], last_log_prob(standard(source), tokens), atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", ["std-12-all-extras", "std-23"])
def test_a_stated_zoo_circuit_alone_recovers_the_whole_model(name):
    """Keeping only the edges the construction uses gives the model's own loss (recovered 1); the
    refined curve finds the same smallest 90% circuit as measuring every size."""
    from interp_icl.circuits.faithfulness import edges_needed, faithfulness_curve
    from interp_icl.circuits.recovery import ranked
    from interp_icl.patching.interventions import sequence_nll
    from interp_icl.roles.validation import zoo_sequences

    zm = zoo_model(name, 48)
    model = zm.build().eval()
    tokens, _ = zoo_sequences(zm, 16, 0)
    graph = standard_graph(model)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, max(zm.parents))

    truth = torch.tensor([(e.sender, e.receiver) in zm.circuit for e in graph.edges], dtype=torch.float64)
    order = ranked(truth[:, None].expand(-1, 16))  # a ranking that puts the stated circuit first
    size = len(zm.circuit)
    coarse = faithfulness_curve(model, graph, tokens, tokens.roll(1, 0), metric, order, sizes=[0, size], refine=False)
    assert coarse["recovered"].tolist() == pytest.approx([0.0, 1.0], abs=1e-9)
    refined = faithfulness_curve(model, graph, tokens, tokens.roll(1, 0), metric, order, sizes=[0, size])
    every = faithfulness_curve(model, graph, tokens, tokens.roll(1, 0), metric, order, sizes=range(size + 1), refine=False)
    assert refined["edges"].tolist() == list(range(size + 1))
    assert edges_needed(refined) == edges_needed(every) <= size


def test_curve_sizes_and_edges_needed():
    import pandas as pd

    from interp_icl.circuits.faithfulness import curve_sizes, edges_needed

    assert curve_sizes(10) == [0, 1, 2, 3, 4, 6, 8, 10]
    curve = pd.DataFrame({"edges": [0, 2, 4, 8], "recovered": [0.0, 0.5, 0.92, 1.0]})
    assert edges_needed(curve) == 4 and edges_needed(curve, 0.99) == 8 and edges_needed(curve.iloc[:2]) is None


def test_ranking_measures_against_hand_counts():
    from interp_icl.circuits.recovery import precision_at_size, ranking_auc

    truth = torch.tensor([True, False, True, False])
    # true scores {3, 1} vs false {2, 0}: 3 of the 4 pairs ordered right
    assert ranking_auc(torch.tensor([3.0, 2.0, 1.0, 0.0]), truth) == 0.75
    assert ranking_auc(torch.tensor([0.0, 1.0, 0.0, 1.0]), truth) == 0.0  # a ranking that must fail
    assert ranking_auc(torch.tensor([1.0, 1.0, 1.0, 1.0]), truth) == 0.5  # ties count one half
    assert precision_at_size(torch.tensor([3.0, 2.0, 1.0, 0.0]), truth) == 0.5  # top 2: one true


STANDARD_POSITIVES = [zm.name for zm in zoo(48) if zm.family == "standard" and zm.breaks is None and zm.circuit]


@pytest.mark.parametrize("name", STANDARD_POSITIVES)
def test_the_hypothesis_drawn_on_the_stated_heads_is_the_constructions_circuit(name):
    """hypothesis_edges on a positive control's stated copier and classifier heads gives exactly the
    edges its construction uses, apart from the diffuse head's (which the hypothesis does not name)."""
    from interp_icl.circuits.hypothesis import hypothesis_edges

    zm = zoo_model(name, 48)
    copiers: dict[int, list[str]] = {}
    for h in zm.heads:
        if h.role == "copier":
            copiers.setdefault(h.offset, []).append(h.name)
    classifiers = [h.name for h in zm.heads if h.role == "classifier"]
    types = hypothesis_edges(copiers, classifiers, zm.parents)
    diffuse = {h.name for h in zm.heads if h.role == "diffuse"}
    expected = {(s, r) for s, r in zm.circuit if s not in diffuse and r.split(".")[0] not in diffuse}
    assert set().union(*types.values()) == expected
    assert all(edges for edges in types.values())  # every type drawn: every head is stated


@pytest.mark.parametrize("name", ["std-12-all-extras", "std-23"])
def test_greedy_pruning_keeps_exactly_the_stated_circuit(name):
    """Every edge outside the construction leaves the output as it is, every edge inside moves it:
    pruning on the KL from the model's output at a small threshold keeps the stated circuit, and
    each visit's change is on the side of the threshold its decision says."""
    from interp_icl.circuits.pruning import greedy_prune
    from interp_icl.patching.interventions import sequence_kl
    from interp_icl.roles.validation import zoo_sequences

    zm = zoo_model(name, 48)
    model = zm.build().eval()
    tokens, _ = zoo_sequences(zm, 16, 0)
    graph = standard_graph(model)
    reference = model(tokens)

    def metric(logits, toks):
        return sequence_kl(model, reference, logits, max(zm.parents))

    threshold = 1e-3  # inside: >= 0.0025 (the diffuse head), outside: exactly 0
    kept, changes = greedy_prune(model, graph, tokens, tokens.roll(1, 0), metric, threshold)
    assert {(graph.edges[i].sender, graph.edges[i].receiver) for i in kept} == set(zm.circuit)
    mean = changes.mean(1)
    assert all(mean[i] >= threshold for i in kept)
    assert all(mean[i] < threshold for i in set(range(len(graph.edges))) - set(kept))


# ---------------------------------------------------------------- the gih family


@pytest.fixture(scope="module")
def gih():
    """An untrained gih model (3 heads, window 3, subsets up to degree 2) in float64 with classifier
    scale a = 3 (not ~0), so that every feature block and every edge carries something."""
    model = build_model(ModelConfig(family="gih", n_heads=3, window=3, max_degree=2), 3, SEQ, 0).double().eval()
    with torch.no_grad():
        model.a.fill_(3.0)
    return model


def gih_metric(model):
    from interp_icl.patching.interventions import sequence_nll

    return lambda out, toks: sequence_nll(model, out, toks, 3)


def test_the_gih_graph_by_hand(gih):
    from interp_icl.circuits import gih_graph

    graph = gih_graph(gih)
    # 3 value edges; head subsets of size 1-2: 3 singletons (1 input each) and 3 pairs (2 each);
    # 6 features x (q, k); classifier value and output
    assert len(graph.edges) == 3 + (3 + 6) + 12 + 2
    assert Edge("L0H1", "F[0,1].in") in graph.edges and Edge("L0H2", "F[0,1].in") not in graph.edges
    assert Edge("F[1,2]", "L1H0.k") in graph.edges and graph.kind == "gih"


def test_gih_feature_blocks_are_the_models(gih):
    from interp_icl.circuits.gih import feature_block

    tokens, _ = tokens_pair(3)
    _, cache = gih.run_with_cache(tokens)
    p = cache["blocks.0.mlp.hook_subset_weights"]
    for k, (subset, sl) in enumerate(gih.feature_slices()):
        block = feature_block(cache["blocks.0.attn.hook_z_normalized"], subset, p[k])
        torch.testing.assert_close(block, cache["blocks.0.mlp.hook_feature"][..., sl], atol=1e-12, rtol=0)


def test_gih_circuit_runs_keeping_every_edge_or_none_are_the_model_on_each_input(gih):
    """With every edge from the source run, every input of every stage is the source's: the output
    is the model's on the source tokens — each kind of patch must be right for this to hold."""
    from interp_icl.circuits import circuit_runner, gih_graph

    tokens, source = tokens_pair(3)
    graph = gih_graph(gih)
    run = circuit_runner(gih, graph, source)
    with torch.no_grad():
        torch.testing.assert_close(run(tokens, {(e.sender, e.receiver) for e in graph.edges}), gih(tokens), atol=1e-12, rtol=0)
        torch.testing.assert_close(run(tokens, set()), gih(source), atol=1e-12, rtol=0)


def test_gih_edges_out_of_a_head_are_its_output_patched_through_transformer_lens_hooks(gih):
    """Patching every edge out of L0H1 (into each feature it enters) equals replacing v̄^1 by the
    source's with a TransformerLens hook; the exact scores of the edges into the classifier's
    value and out of it equal the same hooks on hook_v / hook_z."""
    from interp_icl.circuits import exact_scores, gih_graph
    from interp_icl.circuits.gih import GIHEdges

    tokens, source = tokens_pair(3)
    graph, metric = gih_graph(gih), gih_metric(gih)
    _, src = gih.run_with_cache(source)

    def replaced(name, head=None):
        def hook(act, hook):
            act = act.clone()
            if head is None:
                return src[name]
            act[:, :, head] = src[name][:, :, head]
            return act
        return gih.run_with_hooks(tokens, fwd_hooks=[(name, hook)])

    runs = GIHEdges(gih, graph)
    out_of_l0h1 = {(e.sender, e.receiver) for e in graph.edges if e.sender == "L0H1"}
    with torch.no_grad():
        ours = runs.run(tokens, runs.record(source), out_of_l0h1)
        torch.testing.assert_close(ours, replaced("blocks.0.attn.hook_z_normalized", 1), atol=1e-12, rtol=0)
        scores = exact_scores(gih, graph, tokens, source, metric, edges=[Edge("embed", "L1H0.v"), Edge("L1H0", "logits")])
        clean = metric(gih(tokens), tokens)
        for row, name in zip(scores, ("blocks.1.attn.hook_v", "blocks.1.attn.hook_z")):
            torch.testing.assert_close(row, metric(replaced(name), tokens) - clean, atol=1e-12, rtol=0)


def test_gih_eap_is_the_derivative_along_each_edges_patch(gih):
    """EAP of an edge = d/dε metric(receiver input = base + ε (source − base)) at ε = 0, by central
    differences in float64, for an edge of every kind; the input moved by hooks written here. The
    metric is the mean probability of the targets from row 3 (smooth: the NLL's probability floor
    has no derivative where a token has not been seen yet)."""
    from interp_icl.circuits import eap_scores, gih_graph
    from interp_icl.circuits.gih import feature_block

    tokens, source = tokens_pair(3)
    graph = gih_graph(gih)

    def metric(out, toks):
        return out[:, 3:].gather(-1, toks[:, 3:, None])[..., 0].mean(1)

    eap = eap_scores(gih, graph, tokens, source, metric).mean(1)
    _, base = gih.run_with_cache(tokens)
    _, src = gih.run_with_cache(source)
    slices = {f"F[{','.join(map(str, s))}]": (k, s, sl) for k, (s, sl) in enumerate(gih.feature_slices())}

    def moved(edge: Edge, eps: float) -> float:
        def mix(name):
            return base[name] + eps * (src[name] - base[name])
        if edge.receiver.startswith("L0"):  # embed -> L0H{h}.v: the head's output moves
            h = int(edge.receiver[3])
            def hook(act, hook):
                act = act.clone()
                act[:, :, h] = mix(hook.name)[:, :, h]
                return act
            name = "blocks.0.attn.hook_z"
        elif edge.receiver.endswith(".in"):  # L0H{h} -> F[S].in: head h's factor of block S moves
            k, subset, sl = slices[edge.receiver[:-3]]
            h = int(edge.sender[3])
            def hook(act, hook):
                act = act.clone()
                vbar = base["blocks.0.attn.hook_z_normalized"]
                act[..., sl] = feature_block(vbar, subset, base["blocks.0.mlp.hook_subset_weights"][k],
                                             {h: mix("blocks.0.attn.hook_z_normalized")[:, :, h]})
                return act
            name = "blocks.0.mlp.hook_feature"
        elif edge.receiver in ("L1H0.q", "L1H0.k"):  # one block of the query / key moves
            _, _, sl = slices[edge.sender]
            name = f"blocks.1.attn.hook_{edge.receiver[-1]}"
            def hook(act, hook):
                act = act.clone()
                act[..., sl] = mix(hook.name)[..., sl]
                return act
        else:
            name = "blocks.1.attn.hook_v" if edge.receiver == "L1H0.v" else "blocks.1.attn.hook_z"
            def hook(act, hook):
                return mix(hook.name)
        with torch.no_grad():
            return float(metric(gih.run_with_hooks(tokens, fwd_hooks=[(name, hook)]), tokens).mean())

    chosen = [Edge("embed", "L0H2.v"), Edge("L0H0", "F[0,2].in"), Edge("F[1]", "L1H0.q"), Edge("F[0,1]", "L1H0.k"),
              Edge("embed", "L1H0.v"), Edge("L1H0", "logits")]
    for edge in chosen:
        derivative = (moved(edge, 1e-5) - moved(edge, -1e-5)) / 2e-5
        assert float(eap[graph.edges.index(edge)]) == pytest.approx(derivative, rel=1e-6, abs=1e-10), edge


@pytest.mark.parametrize("name, holds", [("std-12", True), ("std-23", True), ("std-12-uniform-classifier", False),
                                         ("std-12-positional-classifier", False)])
def test_the_circuit_contains_each_hypothesis_edge_type_only_where_the_construction_uses_it(name, holds):
    """The containment verdict of `interp-icl circuit` (the 90 % circuit from exact scores against
    the hypothesis drawn on the stated heads): on the positive controls every edge type is in the
    circuit; where the classifier ignores its query and key (uniform, or by position) no copier or
    query / key type is, while its value and output types still are."""
    from interp_icl.circuits.faithfulness import edges_needed, faithfulness_curve
    from interp_icl.circuits.hypothesis import containment, hypothesis_edges
    from interp_icl.circuits.recovery import ranked
    from interp_icl.patching.interventions import sequence_nll
    from interp_icl.roles.validation import zoo_sequences

    zm = zoo_model(name, 48)
    model = zm.build().eval()
    tokens, _ = zoo_sequences(zm, 16, 0)
    graph = standard_graph(model)

    def metric(logits, toks):
        return sequence_nll(model, logits, toks, max(zm.parents))

    order = ranked(exact_scores(model, graph, tokens, tokens.roll(1, 0), metric))
    size = edges_needed(faithfulness_curve(model, graph, tokens, tokens.roll(1, 0), metric, order))
    circuit = {(graph.edges[i].sender, graph.edges[i].receiver) for i in order[:size]}
    copiers: dict[int, list[str]] = {}
    for h in zm.heads:
        if h.role == "copier":
            copiers.setdefault(h.offset, []).append(h.name)
    classifiers = [h.name for h in zm.heads if h.role in ("classifier", "broken_classifier")]
    types = hypothesis_edges(copiers, classifiers, zm.parents)
    contained = {t: n == len(types[t]) for t, n in containment(types, circuit).items()}
    output_side = {"embed->classifier.v", "classifier->logits"}
    assert all(contained[t] for t in output_side)
    assert all(contained[t] == holds for t in contained if t not in output_side), contained
