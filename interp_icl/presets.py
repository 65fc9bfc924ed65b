"""Named configurations: the quickstart run, the paper's gih setting, the lsa-gd,
implicit-update and implicit-update-source regression settings, and Reddy 2024's in-context
classification (the paper's optimiser, and the abrupt-learning study's fast CPU setting)."""

from __future__ import annotations

from interp_icl.config import ModelConfig, RunConfig, TaskConfig, TrainConfig

# The built-in default task: d = 3, parents {1, 2}, Dirichlet(0.1), 100 context tokens + target.
DEFAULT_TASK = TaskConfig(name="markov", vocab_size=3, parents=(1, 2), alpha=0.1, seq_len=101)


def quickstart() -> RunConfig:
    """The default standard model on the default task, sized to train in minutes on 2 CPU cores."""
    return RunConfig(
        name="quickstart",
        seed=0,
        task=DEFAULT_TASK,
        # 4 heads of 16 per layer (2 heads of 32 until 2026-12-02): with 2 heads, 2 of 10 seeds did
        # not learn the task in 2000 steps; docs/results.md has both populations
        model=ModelConfig(family="standard", n_heads=4, d_model=64, d_head=16, d_mlp=256),
        train=TrainConfig(
            steps=2000,
            batch_size=32,
            optimizer="adamw",
            lr=6e-3,
            schedule="cosine",
            warmup_steps=50,
            eval_every=200,
            n_eval=512,
            checkpoint_every=500,
        ),
    )


def paper_gih() -> RunConfig:
    """Chen et al. 2024's setting: TF(M=3, H=3, d=3, D=2) on parents {1, 2}, alpha = 0.1,
    a fixed set of 10,000 sequences of 100 context tokens + target, last-position loss."""
    return RunConfig(
        name="paper-gih",
        seed=0,
        task=DEFAULT_TASK,
        model=ModelConfig(family="gih", n_heads=3, window=3, max_degree=2),
        train=TrainConfig(
            steps=2000,
            batch_size=10_000,
            data="fixed",
            n_train=10_000,
            optimizer="sgd",
            lr=1.0,
            grad_clip=None,
            loss_positions="last",
            eval_every=100,
            n_eval=2000,
            checkpoint_every=500,
        ),
    )


def lsa_gd() -> RunConfig:
    """von Oswald et al. 2023's setting: one layer of linear self-attention on in-context linear
    regression, d = 10, N = 10 points, x ~ U(-1, 1)^d, w ~ N(0, I), no noise; Adam on the query's
    half squared error with fresh tasks every step."""
    return RunConfig(
        name="lsa-gd",
        seed=0,
        task=TaskConfig(name="regression", x_dim=10, n_points=10, x_scale=1.0, noise=0.0),
        model=ModelConfig(family="lsa", n_layers=1),
        train=TrainConfig(
            steps=5000,
            batch_size=256,
            optimizer="adam",
            lr=1e-3,
            grad_clip=None,
            eval_every=250,
            n_eval=2048,
            checkpoint_every=1000,
        ),
    )


def implicit_update() -> RunConfig:
    """Dherin et al. 2025's experiment, small: one pre-LN softmax attention + MLP block (family
    `block`, d_model 64, 4 heads of 16, d_mlp 128, relu, no positional embedding) on in-context
    linear regression, d = 5, N = 20 points, x ~ U(-1, 1)^d, w ~ N(0, I), no noise; Adam with a
    cosine schedule on the query's half squared error, fresh tasks every step. About 50 s on 2 CPU
    cores; ends near eval_loss 0.065 (zero predictor 0.80, one GD step with the best lr 0.17,
    Bayes 0)."""
    return RunConfig(
        name="implicit-update",
        seed=0,
        task=TaskConfig(name="regression", x_dim=5, n_points=20, x_scale=1.0, noise=0.0),
        model=ModelConfig(
            family="block", n_heads=4, d_model=64, d_head=16, d_mlp=128, norm="LN", n_layers=1
        ),
        train=TrainConfig(
            steps=5000,
            batch_size=128,
            optimizer="adam",
            lr=3e-3,
            schedule="cosine",
            warmup_steps=100,
            grad_clip=1.0,
            eval_every=250,
            n_eval=2048,
            checkpoint_every=1000,
        ),
    )


def implicit_update_source() -> RunConfig:
    """Dherin et al. 2025's own setting (REFERENCE §4), small: one block *without the MLP's skip
    connection* (family `block`, ``mlp_skip=False``: r ← x + Attn(x), then ŷ reads MLP(r); the
    attention keeps its skip) and no norm (the source's T_W = M_W ∘ A puts nothing between the
    attention and W), sizes as `implicit_update` (d_model 64, 4 heads of 16, d_mlp 128, relu, no
    positional embedding); in-context linear regression with the source's Gaussian data,
    x ~ N(0, I), w ~ N(0, I), d = 5, N = 20, no noise. Adam 3e-3 with a cosine schedule, 2500
    steps (about a minute on 1 CPU core); ends near eval_loss 0.54 (zero predictor 2.53, one GD
    step with the best lr 0.55)."""
    base = implicit_update()
    return RunConfig(
        name="implicit-update-source",
        seed=0,
        task=base.task.updated(x_dist="normal"),
        model=base.model.updated(norm="none", mlp_skip=False),
        train=base.train.updated(steps=2500, eval_every=250, checkpoint_every=500),
    )


def icl_classification() -> RunConfig:
    """Reddy 2024's in-context classification, with the paper's task (K = 512 classes, L = 32
    labels, N = 8 pairs, D = 63, epsilon = 0.1, alpha = 0, B = 2, all sequences bursty) and
    optimiser (plain SGD, lr 0.01, batch 128, weight decay 1e-6, no clipping). Reduced for CPU:
    d_model = d_head = d_mlp = 128 and 20,000 steps instead of ~150k (the abrupt ICL transition
    may not be reached in that budget; raise train.steps on a GPU)."""
    return RunConfig(
        name="icl-classification",
        seed=0,
        task=TaskConfig(name="classification"),
        model=ModelConfig(family="classifier", n_heads=1, d_model=128, d_head=128, d_mlp=128),
        train=TrainConfig(
            steps=20_000,
            batch_size=128,
            optimizer="sgd",
            lr=0.01,
            weight_decay=1e-6,
            grad_clip=None,
            eval_every=500,
            n_eval=1024,
            checkpoint_every=2000,
        ),
    )


def abrupt_learning() -> RunConfig:
    """The abrupt-learning study's setting (``analyses/abrupt_learning.py``): the paper's task
    (L = 32, N = 8, D = 63, epsilon = 0.1, alpha = 0, B = 2, all bursty) and network as in
    `icl_classification`, with two departures that make the transition happen on a CPU in about a
    thousand steps: K = 2^14 classes (too many for the network to memorise quickly, so in-weights
    learning does not compete) and Adam (lr 1e-3) instead of plain SGD (lr 0.01, which needs
    ~10^5 steps). Dense evaluation (every 25 steps) and checkpoints (every 50) resolve the jump."""
    base = icl_classification()
    return RunConfig(
        name="abrupt-learning",
        seed=0,
        task=base.task.updated(n_classes=2**14),
        model=base.model,
        train=base.train.updated(
            steps=2000,
            optimizer="adam",
            lr=1e-3,
            eval_every=25,
            n_eval=512,
            checkpoint_every=50,
        ),
    )


PRESETS = {
    "quickstart": quickstart,
    "paper-gih": paper_gih,
    "lsa-gd": lsa_gd,
    "implicit-update": implicit_update,
    "implicit-update-source": implicit_update_source,
    "icl-classification": icl_classification,
    "abrupt-learning": abrupt_learning,
}
