"""Speed benchmarks: Markov sampler throughput, training steps/s of the presets (and of the
abrupt-learning preset at the data-dependence grid's width 64), gih epoch time.

    python benchmarks/speed.py [--threads 2] [--reference PATH] [--json out.json]

Each number is the median over repeats after a warm-up. `--reference PATH` also times the
reference implementation of Chen et al. 2024 on the same workload: PATH is a checkout of
github.com/gszfwsb/Unveiling-Induction-Heads; its modules are imported from PATH at run time
(`RPE/dataset.py` NGramDataset, `RPE/model.py` SimplifiedTwoLayerTransformer as built by
`RPE/train_simplified.py`), nothing of it is part of this project.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

from interp_icl.models import build_model, training_module
from interp_icl.presets import DEFAULT_TASK, abrupt_learning, paper_gih, quickstart
from interp_icl.seeding import generator
from interp_icl.tasks import is_continuous, make_task
from interp_icl.training.trainer import loss_on, make_optimizer

GIH_EPOCH_SEQS = 9_000  # the reference's training split of 10,000 sequences


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def sampler_throughput(n_seqs: int, repeats: int) -> dict[str, float]:
    """Tokens per second of the default Markov task (d=3, parents {1,2}, 101 tokens)."""
    task = make_task(DEFAULT_TASK)
    gen = generator(0, "bench")
    seconds = median_seconds(lambda: task.sample(n_seqs, gen), repeats)
    batch = task.sample(n_seqs, gen)
    bayes_seconds = median_seconds(lambda: task.bayes_probs(batch), repeats)
    tokens = n_seqs * task.seq_len
    return {
        "n_seqs": n_seqs,
        "sampler_tokens_per_s": tokens / seconds,
        "bayes_oracle_tokens_per_s": tokens / bayes_seconds,
    }


def train_step_rate(config, repeats: int) -> dict[str, float]:
    """Optimizer steps per second of a preset (batch sampling included for online data)."""
    task = make_task(config.task)
    model = build_model(config.model, task.vocab_size, task.seq_len, 0)
    module = training_module(model)
    params = [p for p in module.parameters() if p.requires_grad]
    optimizer = make_optimizer(config, params, config.train.lr)
    train = config.train
    fixed = task.sample(train.batch_size, generator(0, "fixed")).tokens if train.data == "fixed" else None
    gen = generator(0, "online")

    def step() -> None:
        tokens = fixed if fixed is not None else task.sample(train.batch_size, gen).tokens
        if is_continuous(task):  # as the trainer: continuous tasks bring their own objective
            loss = task.train_loss(model, tokens)
        else:
            loss = loss_on(model, tokens, train.loss_positions)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
        optimizer.step()

    seconds = median_seconds(step, repeats, warmup=2)
    return {"batch_size": train.batch_size, "ms_per_step": 1e3 * seconds, "steps_per_s": 1 / seconds}


def gih_epoch(repeats: int) -> dict[str, float]:
    """One full-batch epoch of the paper-setting gih model: 9,000 sequences of 100 context tokens
    + target, last-token loss, forward + backward + SGD step."""
    config = paper_gih()
    task = make_task(config.task)
    model = build_model(config.model, task.vocab_size, task.seq_len, 0)
    tokens = task.sample(GIH_EPOCH_SEQS, generator(0, "gih-epoch")).tokens
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)

    def epoch() -> None:
        loss = loss_on(model, tokens, "last")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def dense_epoch() -> None:  # the plain all-position forward, only its last row used
        probs = model(tokens)[:, -1]
        loss = -probs.gather(-1, tokens[:, -1:]).clamp_min(1e-12).log().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {
        "n_seqs": GIH_EPOCH_SEQS,
        "seconds_per_epoch": median_seconds(epoch, repeats, warmup=2),
        "dense_path_seconds_per_epoch": median_seconds(dense_epoch, max(1, repeats // 4)),
    }


def reference(path: Path, repeats: int) -> dict[str, float]:
    """The reference code on the same workload (imported from its checkout at run time)."""
    sys.path[:0] = [str(path / "RPE"), str(path)]
    from dataset import NGramDataset
    from model import SimplifiedTwoLayerTransformer

    torch.manual_seed(0)
    n_gen = 100
    start = time.perf_counter()
    NGramDataset(3, 100, 3, 0.1, n_gen)  # d=3, L=100, 3-gram (parents {1,2}), alpha=0.1
    gen_seconds = time.perf_counter() - start
    # The training split as its loader yields it: one-hot x [n, 100, 3], target y [n].
    data = make_task(DEFAULT_TASK).sample(GIH_EPOCH_SEQS, generator(0, "reference")).tokens
    x = torch.nn.functional.one_hot(data[:, :-1], 3).float()
    y = data[:, -1]
    model = SimplifiedTwoLayerTransformer(3, 100, 3, 3.0, 0.1, 0.01, 0.01, 2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    criterion = torch.nn.CrossEntropyLoss()

    def epoch() -> None:
        loss = criterion(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return {
        "datagen_tokens_per_s": n_gen * 101 / gen_seconds,
        "seconds_per_epoch": median_seconds(epoch, repeats, warmup=1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--reference", type=Path, help="checkout of gszfwsb/Unveiling-Induction-Heads")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out: dict[str, object] = {
        "torch": torch.__version__,
        "threads": args.threads,
        "machine": platform.machine(),
        "processor": platform.processor(),
        "python": platform.python_version(),
    }
    out["sampler"] = [sampler_throughput(n, args.repeats) for n in (1_000, 10_000)]
    for row in out["sampler"]:
        print(
            f"sampler, {row['n_seqs']} seqs: {row['sampler_tokens_per_s'] / 1e6:.2f} M tokens/s; "
            f"Bayes oracle {row['bayes_oracle_tokens_per_s'] / 1e6:.2f} M tokens/s"
        )
    narrow = abrupt_learning()  # the data-dependence grid's width (analyses/sweeps/data_dependence.json)
    narrow = narrow.updated(model=narrow.model.updated(d_model=64, d_head=64, d_mlp=64))
    for name, config in (("quickstart", quickstart()), ("paper-gih", paper_gih()),
                         ("abrupt-learning", abrupt_learning()), ("abrupt-learning-width64", narrow)):
        row = train_step_rate(config, args.repeats)
        out[f"train_{name}"] = row
        print(f"train {name} (batch {row['batch_size']}): {row['ms_per_step']:.1f} ms/step, {row['steps_per_s']:.1f} steps/s")
    row = gih_epoch(args.repeats)
    out["gih_epoch"] = row
    print(
        f"gih epoch, {row['n_seqs']} seqs x 101 tokens, last-token loss, fwd+bwd+step: "
        f"{row['seconds_per_epoch']:.4f} s (dense all-position path: {row['dense_path_seconds_per_epoch']:.3f} s)"
    )
    if args.reference is not None:
        ref = reference(args.reference, max(1, args.repeats // 3))
        out["reference"] = ref
        print(
            f"reference: data generator {ref['datagen_tokens_per_s']:.0f} tokens/s; epoch {ref['seconds_per_epoch']:.3f} s "
            f"-> ours is {ref['seconds_per_epoch'] / row['seconds_per_epoch']:.0f}x faster"
        )
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
