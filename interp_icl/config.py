"""Run configuration: task, model and training settings, validated on construction.

A `RunConfig` is complete: together with the code version it rebuilds the task, the model and
every random draw of a run. It round-trips through JSON (`to_dict` / `from_dict`); unknown keys
and impossible values raise `ConfigError` with a one-line message.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from interp_icl.errors import ConfigError, require

TASKS = ("markov", "repeated", "regression", "classification")
FAMILIES = ("standard", "gih", "lsa", "block", "classifier")
REGRESSION_FAMILIES = ("lsa", "block")  # the families that read (x, y) vector tokens
CLASSIFICATION_FAMILIES = ("classifier",)  # the families that read item/label vector tokens
CONTINUOUS_TASKS = ("regression", "classification")  # tokens are vectors, not token ids
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine")
LOSS_POSITIONS = ("all", "last")
DATA_REGIMES = ("online", "fixed")
NORMS = ("LN", "none")
POSITIONALS = ("standard", "rotary")
GIH_PARAM_GROUPS = ("rpe", "ffn", "a")


@dataclass(frozen=True)
class TaskConfig:
    """Data-generating task.

    markov: in-context n-gram Markov chain; each sequence draws a fresh kernel
      pi(.|z) ~ Dirichlet(alpha * 1_d) for every parent context z, the first max(parents) tokens
      are uniform, then x_t ~ pi(.| x_{t-p} for p in parents).
    repeated: a uniformly random block of `block_len` tokens repeated `n_repeats` times.
    regression: in-context linear regression (von Oswald et al. 2023): `n_points` pairs
      (x_i, <w, x_i> + noise) then a query x_q, x ~ U(-x_scale, x_scale)^x_dim, w ~ N(0, I);
      tokens are the vectors (x, y) (`seq_len` = n_points + 1); the model predicts y_q.
    classification: in-context classification (Reddy 2024): `n_pairs` item-label pairs then a
      target item; `n_classes` Gaussian classes in `item_dim` dimensions with within-class noise
      `epsilon`, `n_labels` labels (class k -> label k mod n_labels), Zipf(`zipf_alpha`) class
      frequencies, a fraction `p_bursty` of bursty sequences (n_pairs / `burstiness` classes,
      each `burstiness` times); class means and label vectors come from `class_seed`
      (`seq_len` = 2 n_pairs + 1; `interp_icl.tasks.classification`).

    `seq_len` is the total number of tokens of a sequence; the last token is the target of
    last-position training (the paper setting with 100 context tokens is seq_len = 101).
    """

    name: str = "markov"
    vocab_size: int = 3
    parents: tuple[int, ...] = (1, 2)
    alpha: float = 0.1
    seq_len: int = 101
    block_len: int = 50
    n_repeats: int = 2
    x_dim: int = 10
    n_points: int = 10
    x_scale: float = 1.0
    noise: float = 0.0
    # classification (Reddy 2024 defaults)
    n_classes: int = 512
    n_labels: int = 32
    n_pairs: int = 8
    item_dim: int = 63
    epsilon: float = 0.1
    zipf_alpha: float = 0.0
    burstiness: int = 2
    p_bursty: float = 1.0
    class_seed: int = 0

    def __post_init__(self) -> None:
        require(self.name in TASKS, f"unknown task {self.name!r}; choose one of {', '.join(TASKS)}")
        require(
            isinstance(self.vocab_size, int) and self.vocab_size >= 2,
            f"task.vocab_size must be an integer >= 2, got {self.vocab_size!r}",
        )
        object.__setattr__(self, "parents", tuple(sorted(set(self.parents))))
        if self.name == "markov":
            require(len(self.parents) > 0, "task.parents is empty; give at least one offset, e.g. [1]")
            require(
                all(isinstance(p, int) and p >= 1 for p in self.parents),
                f"task.parents must be positive integer offsets, got {list(self.parents)}",
            )
            require(self.alpha > 0, f"task.alpha must be > 0, got {self.alpha}")
            require(
                isinstance(self.seq_len, int) and self.seq_len > max(self.parents),
                f"task.seq_len ({self.seq_len}) must exceed the largest parent offset "
                f"({max(self.parents)})",
            )
            require(
                self.vocab_size ** len(self.parents) <= 1_000_000,
                f"task has {self.vocab_size}^{len(self.parents)} parent contexts; keep it <= 1e6",
            )
        elif self.name == "repeated":
            require(
                self.block_len >= 1 and self.n_repeats >= 1,
                "task.block_len and task.n_repeats must be >= 1",
            )
            object.__setattr__(self, "seq_len", self.block_len * self.n_repeats)
        elif self.name == "classification":
            self._check_classification()
            object.__setattr__(self, "seq_len", 2 * self.n_pairs + 1)
        else:
            require(
                isinstance(self.x_dim, int) and self.x_dim >= 1,
                f"task.x_dim must be an integer >= 1, got {self.x_dim!r}",
            )
            require(
                isinstance(self.n_points, int) and self.n_points >= 1,
                f"task.n_points must be an integer >= 1, got {self.n_points!r}",
            )
            require(self.x_scale > 0, f"task.x_scale must be > 0, got {self.x_scale}")
            require(self.noise >= 0, f"task.noise must be >= 0, got {self.noise}")
            object.__setattr__(self, "seq_len", self.n_points + 1)

    def _check_classification(self) -> None:
        for name, low in (
            ("n_classes", 1),
            ("n_labels", 2),
            ("n_pairs", 1),
            ("item_dim", 1),
            ("burstiness", 1),
        ):
            value = getattr(self, name)
            require(
                isinstance(value, int) and value >= low,
                f"task.{name} must be an integer >= {low}, got {value!r}",
            )
        require(
            isinstance(self.class_seed, int) and self.class_seed >= 0,
            f"task.class_seed must be an integer >= 0, got {self.class_seed!r}",
        )
        require(self.epsilon >= 0, f"task.epsilon must be >= 0, got {self.epsilon}")
        require(self.zipf_alpha >= 0, f"task.zipf_alpha must be >= 0, got {self.zipf_alpha}")
        require(0 <= self.p_bursty <= 1, f"task.p_bursty must be in [0, 1], got {self.p_bursty}")
        require(
            self.n_pairs % self.burstiness == 0,
            f"task.n_pairs ({self.n_pairs}) must be a multiple of task.burstiness "
            f"({self.burstiness})",
        )
        groups = self.n_pairs // self.burstiness
        require(
            groups <= min(self.n_classes, self.n_labels),
            f"a bursty sequence needs n_pairs / burstiness = {groups} distinct classes and labels; "
            f"raise task.burstiness or task.n_classes / task.n_labels",
        )
        require(
            self.n_classes >= 2 or self.p_bursty == 1,
            "non-bursty sequences need task.n_classes >= 2 (the target's class is kept out of "
            "the in-weights evaluation context)",
        )


@dataclass(frozen=True)
class ModelConfig:
    """Model family and its sizes.

    standard: TransformerLens-native two-layer transformer (TransformerBridge.boot_native).
    gih: the generalized-induction-head model TF(M, H, d, D) of Chen et al. 2024 with
      window M = `window`, H = `n_heads` layer-1 heads, subsets of heads of size <= D = `max_degree`.
    lsa: `n_layers` layers of linear self-attention on (x, y) tokens (von Oswald et al. 2023), for
      the regression task.
    block: `n_layers` (default 1) pre-LN softmax attention + MLP blocks on (x, y) tokens with a
      linear embedding and readout, no positional embedding (Dherin et al. 2025's one-block
      model), for the regression task; uses d_model, n_heads, d_head, d_mlp, norm, act_fn and
      n_layers (`positional` is ignored; `interp_icl.models.regression_block`).
    classifier: Reddy 2024's in-context classifier for the classification task: a linear
      embedding to d_model, two single-head causal softmax attention layers (head size d_head)
      with residuals and no LayerNorm, three ReLU layers of width d_mlp and a linear readout over
      n_labels labels at the target (`interp_icl.models.icl_classifier`); needs n_heads = 1;
      n_labels is taken from task.n_labels when left null.
    """

    family: str = "standard"
    n_heads: int = 2
    # standard
    d_model: int = 64
    d_head: int = 32
    d_mlp: int = 256
    attn_only: bool = False
    norm: str = "LN"
    positional: str = "standard"
    act_fn: str = "relu"
    # gih
    window: int = 3
    max_degree: int = 2
    w_plus: float = 3.0
    w_minus: float = 0.1
    c_init: float = 0.01
    a_init: float = 0.01
    # lsa, block
    n_layers: int = 1
    init_variance: float = 0.002  # entries ~ N(0, init_variance / (n_layers * (d + 1)))
    # classifier
    n_labels: int | None = None  # filled from task.n_labels by RunConfig

    def __post_init__(self) -> None:
        require(
            self.family in FAMILIES,
            f"unknown model family {self.family!r}; choose one of {', '.join(FAMILIES)}",
        )
        require(self.n_heads >= 1, f"model.n_heads must be >= 1, got {self.n_heads}")
        if self.family in ("standard", "block"):
            for name in ("d_model", "d_head", "d_mlp"):
                value = getattr(self, name)
                require(value >= 1, f"model.{name} must be >= 1, got {value}")
            require(self.norm in NORMS, f"model.norm must be one of {NORMS}, got {self.norm!r}")
            require(
                self.family == "block" or self.positional in POSITIONALS,
                f"model.positional must be one of {POSITIONALS}, got {self.positional!r}",
            )
            require(
                self.family == "block" or self.positional != "rotary" or self.d_head % 2 == 0,
                f"rotary positions need an even model.d_head, got {self.d_head}",
            )
            require(
                self.act_fn in ("relu", "gelu", "gelu_new", "silu"),
                f"model.act_fn must be relu, gelu, gelu_new or silu, got {self.act_fn!r}",
            )
            if self.family == "block":
                require(
                    not self.attn_only, "the block family has an MLP; set model.attn_only false"
                )
                require(
                    isinstance(self.n_layers, int) and self.n_layers >= 1,
                    f"model.n_layers must be an integer >= 1, got {self.n_layers!r}",
                )
        elif self.family == "classifier":
            require(
                self.n_heads == 1,
                f"the classifier family has single-head attention; set model.n_heads 1, "
                f"got {self.n_heads}",
            )
            for name in ("d_model", "d_head", "d_mlp"):
                value = getattr(self, name)
                require(value >= 1, f"model.{name} must be >= 1, got {value}")
            require(
                self.n_labels is None or (isinstance(self.n_labels, int) and self.n_labels >= 2),
                f"model.n_labels must be an integer >= 2 or null, got {self.n_labels!r}",
            )
        elif self.family == "lsa":
            require(
                isinstance(self.n_layers, int) and self.n_layers >= 1,
                f"model.n_layers must be an integer >= 1, got {self.n_layers!r}",
            )
            require(self.init_variance >= 0, f"model.init_variance must be >= 0, got {self.init_variance}")
        else:
            require(self.window >= 1, f"model.window must be >= 1, got {self.window}")
            require(
                0 <= self.max_degree <= self.n_heads,
                f"model.max_degree must be between 0 and n_heads ({self.n_heads}), "
                f"got {self.max_degree}",
            )


@dataclass(frozen=True)
class StageConfig:
    """One stage of staged training: only `groups` are trained, for `steps` steps."""

    groups: tuple[str, ...]
    steps: int
    lr: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "groups", tuple(self.groups))
        require(len(self.groups) > 0, "a training stage needs at least one parameter group")
        require(self.steps >= 1, f"a training stage needs steps >= 1, got {self.steps}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data regime, evaluation and checkpointing."""

    steps: int = 1000
    batch_size: int = 64
    data: str = "online"
    n_train: int = 10_000
    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0
    grad_clip: float | None = 1.0
    loss_positions: str = "all"
    stages: tuple[StageConfig, ...] = ()
    eval_every: int = 100
    n_eval: int = 512
    oracle_beta: float = 0.01
    checkpoint_every: int = 500
    device: str = "auto"

    def __post_init__(self) -> None:
        stages = tuple(s if isinstance(s, StageConfig) else StageConfig(**s) for s in self.stages)
        object.__setattr__(self, "stages", stages)
        if stages:
            object.__setattr__(self, "steps", sum(s.steps for s in stages))
        require(self.steps >= 1, f"train.steps must be >= 1, got {self.steps}")
        require(self.batch_size >= 1, f"train.batch_size must be >= 1, got {self.batch_size}")
        require(self.data in DATA_REGIMES, f"train.data must be one of {DATA_REGIMES}, got {self.data!r}")
        require(self.n_train >= 1, f"train.n_train must be >= 1, got {self.n_train}")
        require(
            self.data != "fixed" or self.batch_size <= self.n_train,
            f"train.batch_size ({self.batch_size}) exceeds train.n_train ({self.n_train})",
        )
        require(
            self.optimizer in OPTIMIZERS,
            f"unknown optimizer {self.optimizer!r}; choose one of {', '.join(OPTIMIZERS)}",
        )
        require(self.lr > 0, f"train.lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"train.weight_decay must be >= 0, got {self.weight_decay}")
        require(
            self.schedule in SCHEDULES,
            f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)}",
        )
        require(self.warmup_steps >= 0, f"train.warmup_steps must be >= 0, got {self.warmup_steps}")
        require(
            self.grad_clip is None or self.grad_clip > 0,
            f"train.grad_clip must be > 0 or null, got {self.grad_clip}",
        )
        require(
            self.loss_positions in LOSS_POSITIONS,
            f"train.loss_positions must be one of {LOSS_POSITIONS}, got {self.loss_positions!r}",
        )
        require(self.eval_every >= 1, f"train.eval_every must be >= 1, got {self.eval_every}")
        require(self.n_eval >= 1, f"train.n_eval must be >= 1, got {self.n_eval}")
        require(self.oracle_beta >= 0, f"train.oracle_beta must be >= 0, got {self.oracle_beta}")
        require(
            self.checkpoint_every >= 1,
            f"train.checkpoint_every must be >= 1, got {self.checkpoint_every}",
        )
        require(
            self.device in ("auto", "cpu") or self.device.startswith("cuda"),
            f"train.device must be auto, cpu or cuda[:N], got {self.device!r}",
        )


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a run. `versions` is filled in when the run is created."""

    name: str = "run"
    seed: int = 0
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        require(isinstance(self.seed, int) and self.seed >= 0, f"seed must be an integer >= 0, got {self.seed!r}")
        require(
            (self.task.name == "regression") == (self.model.family in REGRESSION_FAMILIES)
            and (self.task.name == "classification")
            == (self.model.family in CLASSIFICATION_FAMILIES),
            f"model family {self.model.family!r} cannot learn task {self.task.name!r}: the "
            "regression task needs model.family 'lsa' or 'block', the classification task needs "
            "'classifier', and those families need those tasks",
        )
        if self.model.family == "classifier":
            require(
                self.model.n_labels in (None, self.task.n_labels),
                f"model.n_labels ({self.model.n_labels}) differs from task.n_labels "
                f"({self.task.n_labels}); set it null or equal",
            )
            object.__setattr__(
                self, "model", dataclasses.replace(self.model, n_labels=self.task.n_labels)
            )
        if self.model.family == "gih":
            require(
                self.model.window < self.task.seq_len,
                f"model.window ({self.model.window}) must be smaller than task.seq_len "
                f"({self.task.seq_len})",
            )
            require(
                self.task.name != "markov" or max(self.task.parents) <= self.model.window,
                f"parent offset {max(self.task.parents)} lies beyond the gih window "
                f"({self.model.window}); raise model.window or drop that parent",
            )
            groups = {g for stage in self.train.stages for g in stage.groups}
            unknown = groups - set(GIH_PARAM_GROUPS)
            require(
                not unknown,
                f"unknown gih parameter group(s) {sorted(unknown)}; choose from {GIH_PARAM_GROUPS}",
            )
        else:
            require(
                not self.train.stages,
                "staged training (train.stages) is only available for the gih model family",
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "RunConfig":
        require(isinstance(data, dict), "a run config must be a JSON object")
        _reject_unknown(cls, data, "config")
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k not in ("task", "model", "train")}
        for key, sub in (("task", TaskConfig), ("model", ModelConfig), ("train", TrainConfig)):
            section = data.get(key, {})
            require(isinstance(section, dict), f"config.{key} must be a JSON object")
            _reject_unknown(sub, section, f"config.{key}")
            kwargs[key] = _build(sub, section, key)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # wrong value types that dataclasses cannot catch
            raise ConfigError(f"invalid config: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "RunConfig":
        path = Path(path)
        require(path.is_file(), f"config file {path} does not exist")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid JSON: {exc.msg} (line {exc.lineno})") from None
        return cls.from_dict(data)


def _reject_unknown(cls: type, data: dict[str, Any], where: str) -> None:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    require(not unknown, f"unknown key(s) in {where}: {', '.join(unknown)}")


def _build(cls: type, data: dict[str, Any], where: str) -> Any:
    try:
        if "parents" in data and data["parents"] is not None:
            data = {**data, "parents": tuple(data["parents"])}
        return cls(**data)
    except TypeError as exc:
        raise ConfigError(f"invalid config.{where}: {exc}") from None


def with_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Return `config` with dotted-key overrides applied, e.g. {"task.alpha": 1.0}."""
    data = config.to_dict()
    for dotted, value in overrides.items():
        if value is None:
            continue
        target = data
        *path, last = dotted.split(".")
        for key in path:
            target = target[key]
        target[last] = value
    return RunConfig.from_dict(data)
