"""The training loop: plain PyTorch, deterministic on CPU, resumable from any checkpoint.

Step s (1-based) is the s-th optimiser update. The batch of step s is a pure function of
(seed, s), the learning rate a pure function of s, so a run resumed from checkpoint c continues
exactly as the uninterrupted run would. Staged training (gih only) trains one set of parameter
groups per stage with a fresh optimiser, like the paper's three stages.

Evaluation runs at step 0, every `eval_every` steps, at every checkpoint and at the end, on a
fixed held-out set: the model's loss over all targets and on the last token, beside the Bayes,
unigram and true-parent S-gram losses on the same sequences. `eval_floored_frac[_last]` is the
fraction of targets given probability <= PROB_FLOOR (1e-12). The gih model's output is a mixture
of context tokens, so a target absent from the context gets probability exactly 0; its loss there
is the floor's 27.6 nats, a convention rather than a property of the model.

Continuous tasks (regression) bring their own objective: the task's `train_loss` (half squared
error of the query's y) is minimised, and evaluation records the task's `eval_loss` beside its
oracles' losses (`bayes_loss`, ...) on the held-out set.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from interp_icl.config import RunConfig, StageConfig
from interp_icl.errors import ConfigError, require
from interp_icl.models import (
    PROB_FLOOR,
    build_model,
    next_token_log_probs,
    progress_numbers,
    training_module,
)
from interp_icl.tasks import Batch, Task, is_continuous, make_task
from interp_icl.theory.estimators import mean_nll
from interp_icl.seeding import derive_seed, generator

EVAL_CHUNK = 256


@dataclass
class TrainResult:
    run_dir: Path
    final: dict[str, float]


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        require(torch.cuda.is_available(), f"device {name} requested but CUDA is not available", ConfigError)
    return torch.device(name)


def checkpoint_steps(total: int, every: int) -> set[int]:
    """Log-spaced steps 0, 1, 2, 3, 4, 6, 8, 12, 16, ... plus every `every` steps and the end."""
    steps = {0, total}
    k = 1
    while k <= total:
        steps.update(s for s in (k, (3 * k) // 2) if s <= total)
        k *= 2
    steps.update(range(every, total + 1, every))
    return steps


def stages_of(config: RunConfig, model: nn.Module) -> list[tuple[StageConfig, list[nn.Parameter]]]:
    """(stage, its parameters) in order; one stage over every parameter when none are given."""
    train = config.train
    if not train.stages:
        params = list(training_module(model).parameters())
        return [(StageConfig(groups=("all",), steps=train.steps, lr=train.lr), params)]
    groups = model.param_groups()
    return [(s, [p for g in s.groups for p in groups[g]]) for s in train.stages]


def learning_rate(config: RunConfig, stage: StageConfig, local_step: int) -> float:
    """Learning rate of the `local_step`-th update (1-based) within a stage."""
    train = config.train
    base = stage.lr if stage.lr is not None else train.lr
    if train.warmup_steps and local_step <= train.warmup_steps:
        return base * local_step / train.warmup_steps
    if train.schedule == "constant":
        return base
    span = max(stage.steps - train.warmup_steps, 1)
    progress = min(max(local_step - train.warmup_steps, 0) / span, 1.0)
    return base * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_optimizer(config: RunConfig, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=train.momentum, weight_decay=train.weight_decay)
    if train.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=train.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=train.weight_decay)


def loss_on(model: nn.Module, tokens: Tensor, positions: str) -> Tensor:
    """Mean -log p(target): over every target t >= 1 ("all") or the last token only ("last")."""
    if positions == "last":
        log_probs = next_token_log_probs(model, tokens, last_only=True)
        return -log_probs.gather(-1, tokens[:, -1:]).mean()
    log_probs = next_token_log_probs(model, tokens)[:, 1:]
    return -log_probs.gather(-1, tokens[:, 1:, None]).mean()


class Recorder(Protocol):
    """Where a trainer's metrics rows and checkpoints go (`interp_icl.runs.rundir.RunRecorder`
    writes them into a run directory)."""

    path: Path

    def append_metrics(self, row: dict[str, Any]) -> None: ...

    def read_metrics(self) -> list[dict[str, Any]]: ...

    def has_checkpoints(self) -> bool: ...

    def save_checkpoint(
        self, step: int, stage: int, family: str, model: nn.Module, optimizer: torch.optim.Optimizer | None
    ) -> None: ...


class Trainer:
    """Trains one run. Make one with `interp_icl.runs.create_run`, `resume_run` or `open_run`,
    then call `run()`."""

    def __init__(self, config: RunConfig, recorder: Recorder, progress: bool = True):
        self.config = config
        self.recorder = recorder
        self.run_dir = recorder.path
        self.progress = progress
        self.device = resolve_device(config.train.device)
        self.task: Task = make_task(config.task)
        self.model = build_model(
            config.model, self.task.vocab_size, self.task.seq_len, derive_seed(config.seed, "model")
        )
        if self.device.type != "cpu":
            self.model = self.model.to(self.device)
        self.stages = stages_of(config, self.model)
        self.stage_starts = [0]
        for stage, _ in self.stages:
            self.stage_starts.append(self.stage_starts[-1] + stage.steps)
        self.total_steps = self.stage_starts[-1]
        self.ckpt_steps = checkpoint_steps(self.total_steps, config.train.checkpoint_every)
        self.eval_batch = self.task.sample(config.train.n_eval, generator(config.seed, "eval"))
        self.baseline_losses = self._baseline_losses()
        self.train_set: Batch | None = None
        if config.train.data == "fixed":
            self.train_set = self.task.sample(config.train.n_train, generator(config.seed, "train-set"))
        self.step = 0
        self.optimizer: torch.optim.Optimizer | None = None
        self.optimizer_stage = -1

    def restore(self, step: int, stage: int, optim_state: dict[str, Any]) -> None:
        """Continue after `step` (its weights already loaded): the optimiser state is restored
        when the next update belongs to the checkpoint's `stage`."""
        self.step = step
        next_stage = self.stage_index(step + 1) if step < self.total_steps else -1
        if optim_state and next_stage == stage:
            self._ensure_optimizer(next_stage)
            self.optimizer.load_state_dict(optim_state)

    # ----- pieces -------------------------------------------------------------------------------
    def stage_index(self, step: int) -> int:
        """Stage of the `step`-th update (1-based)."""
        for k in range(len(self.stages)):
            if step <= self.stage_starts[k + 1]:
                return k
        return len(self.stages) - 1

    def _ensure_optimizer(self, stage: int) -> None:
        if self.optimizer_stage == stage:
            return
        for p in self.model.parameters():
            p.requires_grad_(False)
        _, params = self.stages[stage]
        for p in params:
            p.requires_grad_(True)
        self.optimizer = make_optimizer(self.config, params, lr=0.0)
        self.optimizer_stage = stage

    def batch_for(self, step: int) -> Tensor:
        train = self.config.train
        if self.train_set is None:
            return self.task.sample(train.batch_size, generator(self.config.seed, "train", step)).tokens
        n = len(self.train_set)
        per_epoch = n // train.batch_size
        epoch, index = divmod(step - 1, per_epoch)
        order = torch.randperm(n, generator=generator(self.config.seed, "epoch", epoch))
        chosen = order[index * train.batch_size : (index + 1) * train.batch_size]
        return self.train_set.tokens[chosen]

    def _baseline_losses(self) -> dict[str, float]:
        if is_continuous(self.task):
            return self.task.baseline_losses(self.eval_batch)
        out: dict[str, float] = {}
        tokens = self.eval_batch.tokens
        for name, probs in self.task.baselines(self.eval_batch, self.config.train.oracle_beta).items():
            out[f"{name}_loss"] = mean_nll(probs, tokens)
            out[f"{name}_loss_last"] = mean_nll(probs, tokens, slice(-1, None))
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[str, float]:
        if is_continuous(self.task):
            row = self.task.evaluate(self.model, self.eval_batch.to(self.device))
            row.update(self.baseline_losses)
            row["loss_minus_bayes"] = row["eval_loss"] - row["bayes_loss"]
            return row
        tokens = self.eval_batch.tokens
        log_probs = torch.cat(
            [
                next_token_log_probs(self.model, chunk.to(self.device)).cpu()
                for chunk in tokens.split(EVAL_CHUNK)
            ]
        )
        target = log_probs.gather(-1, tokens[..., None])[..., 0].double()
        # targets the model gave probability <= PROB_FLOOR (tolerance for the float32 log of the floor)
        floored = target <= math.log(PROB_FLOOR) + 1e-4
        row = {
            "eval_loss": float(-target[:, 1:].mean()),
            "eval_loss_last": float(-target[:, -1].mean()),
            "eval_floored_frac": float(floored[:, 1:].double().mean()),
            "eval_floored_frac_last": float(floored[:, -1].double().mean()),
        }
        row.update(self.baseline_losses)
        row["loss_minus_bayes"] = row["eval_loss"] - row["bayes_loss"]
        row["loss_minus_bayes_last"] = row["eval_loss_last"] - row["bayes_loss_last"]
        row.update(progress_numbers(self.model))
        return row

    def _record(self, train_loss: float | None, lr: float, started: float) -> dict[str, float]:
        row: dict[str, object] = {"step": self.step, "stage": max(self.optimizer_stage, 0), "lr": lr}
        row["train_loss"] = train_loss
        row.update(self.evaluate())
        row["elapsed_s"] = round(time.perf_counter() - started, 3)
        self.recorder.append_metrics(row)
        return row

    def _checkpoint(self) -> None:
        self.recorder.save_checkpoint(
            self.step,
            max(self.optimizer_stage, 0),
            self.config.model.family,
            self.model,
            self.optimizer,
        )

    # ----- the loop -----------------------------------------------------------------------------
    def run(self, stop_after: int | None = None, on_step: Callable[[int], None] | None = None) -> TrainResult:
        """Train to the end (or until `stop_after` total steps, for tests of resuming)."""
        train = self.config.train
        started = time.perf_counter()
        last_row: dict[str, float] = {}
        if self.step == 0 and not self.recorder.has_checkpoints():
            last_row = self._record(None, 0.0, started)
            self._checkpoint()
        end = self.total_steps if stop_after is None else min(stop_after, self.total_steps)
        with _progress(self.progress, self.total_steps, self.step) as bar:
            while self.step < end:
                step = self.step + 1
                stage = self.stage_index(step)
                self._ensure_optimizer(stage)
                stage_cfg, params = self.stages[stage]
                lr = learning_rate(self.config, stage_cfg, step - self.stage_starts[stage])
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                tokens = self.batch_for(step).to(self.device)
                if is_continuous(self.task):
                    loss = self.task.train_loss(self.model, tokens)
                else:
                    loss = loss_on(self.model, tokens, train.loss_positions)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if train.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, train.grad_clip)
                self.optimizer.step()
                self.step = step
                if step % train.eval_every == 0 or step in self.ckpt_steps:
                    last_row = self._record(loss.item(), lr, started)
                if step in self.ckpt_steps:
                    self._checkpoint()
                bar.update(step, loss.item(), last_row.get("loss_minus_bayes"))
                if on_step is not None:
                    on_step(step)
        if not last_row:
            rows = self.recorder.read_metrics()
            last_row = rows[-1] if rows else {}
        return TrainResult(self.run_dir, last_row)


class _progress:
    """A rich progress bar with step, loss, loss - Bayes and ETA (or nothing when disabled)."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.enabled = enabled
        self.total = total
        self.start = start

    def __enter__(self) -> _progress:
        if self.enabled:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(
                TextColumn("step {task.completed}/{task.total}"),
                BarColumn(),
                TextColumn("loss {task.fields[loss]}  loss-Bayes {task.fields[gap]}"),
                TimeRemainingColumn(),
            )
            self.bar.__enter__()
            self.task = self.bar.add_task("train", total=self.total, completed=self.start, loss="-", gap="-")
        return self

    def update(self, step: int, loss: float, gap: float | None) -> None:
        if self.enabled:
            gap_text = "-" if gap is None else f"{gap:+.4f}"
            self.bar.update(self.task, completed=step, loss=f"{loss:.4f}", gap=gap_text)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.__exit__(*exc)
