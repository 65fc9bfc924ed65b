"""Run configuration: task, model and training settings, validated on construction.

A `RunConfig` is complete: together with the code version it rebuilds the task, the model and
every random draw of a run. Its task and model sections are the config types that tasks and
families register (`interp_icl.registry`), picked by ``task.name`` (default "markov") and
``model.family`` (default "standard"); `RunConfig` itself only checks that the two fit together
(the family's ``tasks``, its ``check_with_task`` hook, its parameter groups for ``train.stages``).

It round-trips through JSON (`to_dict` / `from_dict`, written with ``"config_version": 2``);
files without the marker (release 1, whose task and model sections held every field of every
task and family) load with the fields that do not belong to the chosen task or family dropped.
Unknown keys and impossible values raise `ConfigError` with a one-line message naming the field.
Importing this module imports no torch.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SerializeAsAny, field_validator, model_validator

from interp_icl import registry
from interp_icl.errors import require
from interp_icl.jsonable import read_json_file
from interp_icl.registry import (
    CONFIG_VERSION,
    FamilyConfigBase,
    Section,
    TaskConfigBase,
    family_config,
    task_config,
)

CONTINUOUS_TASKS = ("regression", "classification")  # built-in tasks with vector tokens

# Every field of the release-1 union sections: only these are dropped from legacy files.
LEGACY_TASK_FIELDS = frozenset(
    [
        "name", "vocab_size", "parents", "alpha", "seq_len", "block_len", "n_repeats", "x_dim",
        "n_points", "x_scale", "noise", "n_classes", "n_labels", "n_pairs", "item_dim", "epsilon",
        "zipf_alpha", "burstiness", "p_bursty", "class_seed",
    ]
)
LEGACY_MODEL_FIELDS = frozenset(
    [
        "family", "n_heads", "d_model", "d_head", "d_mlp", "attn_only", "norm", "positional",
        "act_fn", "window", "max_degree", "w_plus", "w_minus", "c_init", "a_init", "n_layers",
        "init_variance", "n_labels",
    ]
)


def TaskConfig(**fields: Any) -> TaskConfigBase:
    """The registered task config of ``fields["name"]`` (default "markov"), e.g.
    ``TaskConfig(name="markov", vocab_size=3, parents=(1, 2), alpha=0.1, seq_len=101)``."""
    return task_config(fields)


def ModelConfig(**fields: Any) -> FamilyConfigBase:
    """The registered family config of ``fields["family"]`` (default "standard"), e.g.
    ``ModelConfig(family="gih", n_heads=3, window=3, max_degree=2)``."""
    return family_config(fields)


class StageConfig(Section):
    """One stage of staged training: only the parameter `groups` are trained, for `steps` steps,
    at learning rate `lr` (train.lr when null)."""

    section = "train.stages"
    integer_words = False
    groups: tuple[str, ...] = Field(min_length=1)
    steps: int = Field(ge=1)
    lr: float | None = Field(None, gt=0)


class TrainConfig(Section):
    """Optimisation, data regime, evaluation and checkpointing.

    steps: optimizer updates (the sum of the stages' steps when `stages` are given).
    batch_size: sequences per update. data: "online" (fresh batches) or "fixed" (a set of
    `n_train` sequences drawn once). optimizer: sgd (with `momentum` in [0, 1)), adam or adamw;
    lr: base learning rate; weight_decay: L2 (sgd, adam) or decoupled (adamw) decay.
    schedule: constant or cosine (to 0 at the end), after `warmup_steps` of linear warm-up.
    grad_clip: max global gradient norm, null for none. loss_positions: "all" targets or only
    the "last" token. eval_every / n_eval: evaluation period (steps) and held-out sequences.
    oracle_beta: additive smoothing (> 0) of the in-context S-gram oracles. checkpoint_every: steps
    between checkpoints. device: auto, cpu or cuda[:N].
    """

    section = "train"
    integer_words = False
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(64, ge=1)
    data: Literal["online", "fixed"] = "online"
    n_train: int = Field(10_000, ge=1)
    optimizer: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.0, ge=0, lt=1)
    schedule: Literal["constant", "cosine"] = "constant"
    warmup_steps: int = Field(0, ge=0)
    grad_clip: float | None = Field(1.0, gt=0)
    loss_positions: Literal["all", "last"] = "all"
    stages: tuple[StageConfig, ...] = ()
    eval_every: int = Field(100, ge=1)
    n_eval: int = Field(512, ge=1)
    oracle_beta: float = Field(0.01, gt=0)  # 0 gives oracles probability 0: infinite loss
    checkpoint_every: int = Field(500, ge=1)
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        require(
            re.fullmatch(r"auto|cpu|cuda(:\d+)?", device) is not None,
            f"train.device must be auto, cpu or cuda[:N], got {device!r}",
        )
        return device

    @model_validator(mode="after")
    def _fits(self) -> TrainConfig:
        if self.stages:  # the run is as long as its stages
            object.__setattr__(self, "steps", sum(s.steps for s in self.stages))
        require(
            self.data != "fixed" or self.batch_size <= self.n_train,
            f"train.batch_size ({self.batch_size}) exceeds train.n_train ({self.n_train})",
        )
        return self


class RunConfig(Section):
    """Everything that defines a run: `name` (its directory under the runs folder), `seed`
    (every random draw derives from it), the task and model sections (registered types), the
    training section, and `versions` (package versions, filled in when the run is created)."""

    name: str = "run"
    seed: int = Field(0, ge=0)
    task: SerializeAsAny[TaskConfigBase] = Field(default_factory=lambda: task_config({}))
    model: SerializeAsAny[FamilyConfigBase] = Field(default_factory=lambda: family_config({}))
    train: TrainConfig = Field(default_factory=TrainConfig)
    versions: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _sections(cls, data: Any) -> Any:
        """Type the task and model sections by name through the registry, then check that they
        fit together."""
        if not isinstance(data, dict):
            return data  # Section._plain_input reports it
        task = task_config(data.get("task", {}))
        model = family_config(data.get("model", {}))
        train = data.get("train", {})
        train = train if isinstance(train, TrainConfig) else TrainConfig(**_object(train, "train"))
        entry = registry.family_entry(model.family)
        learners = [f for f in registry.family_names() if task.name in registry.family_entry(f).tasks]
        require(
            task.name in entry.tasks,
            f"model family {model.family!r} cannot learn task {task.name!r}: task {task.name!r} "
            f"needs model.family {' or '.join(map(repr, learners)) or '(none registered)'}, and "
            f"{model.family!r} learns {' or '.join(map(repr, entry.tasks))}",
        )
        groups = {g for stage in train.stages for g in stage.groups}
        if entry.param_groups:
            unknown = sorted(groups - set(entry.param_groups))
            require(
                not unknown,
                f"unknown {model.family} parameter group(s) {unknown}; choose from "
                f"{entry.param_groups}",
            )
        else:
            with_groups = [f for f in registry.family_names() if registry.family_entry(f).param_groups]
            require(
                not train.stages,
                f"staged training (train.stages) is only available for the "
                f"{' and '.join(with_groups)} model family",
            )
        model = model.check_with_task(task)
        return {**data, "task": task, "model": model, "train": train}

    def to_dict(self) -> dict[str, Any]:
        """Plain data (tuples stay tuples) with ``config_version`` first."""
        return {"config_version": CONFIG_VERSION, **self.model_dump()}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Validate plain data; a dict without ``config_version`` is read as a release-1 file."""
        require(isinstance(data, dict), "a run config must be a JSON object")
        data = dict(data)
        version = data.pop("config_version", None)
        if version is None:
            data = _drop_legacy_fields(data)
        else:
            require(
                version == CONFIG_VERSION,
                f"config_version {version!r} is not supported; this release reads "
                f"{CONFIG_VERSION} (and files without a version)",
            )
        return cls(**data)

    @classmethod
    def from_file(cls, path: str | Path) -> RunConfig:
        data = read_json_file(path, "config file")
        return cls.from_dict(data)


def _object(value: Any, key: str) -> dict[str, Any]:
    require(isinstance(value, dict), f"config.{key} must be a JSON object")
    return value


def _drop_legacy_fields(data: dict[str, Any]) -> dict[str, Any]:
    """A dict without ``config_version``: a task / model section that holds release-1 fields of
    another task or family (release 1 wrote every field of its union types) is a release-1
    section; keep only what the chosen type read in release 1 (unknown names and unknown keys
    still fail, and a section without foreign fields is validated as it is)."""
    data = dict(data)
    registry.family_names()  # loads the built-in entries
    for key, legacy, tag, default, table in (
        ("task", LEGACY_TASK_FIELDS, "name", "markov", registry._TASKS),
        ("model", LEGACY_MODEL_FIELDS, "family", "standard", registry._FAMILIES),
    ):
        section = data.get(key)
        entry = table.get(section.get(tag, default)) if isinstance(section, dict) else None
        if entry is None:
            continue
        own = set(entry.config_type.model_fields)
        if any(k in legacy and k not in own for k in section):
            kept = own - entry.config_type.not_in_release_1
            data[key] = {k: v for k, v in section.items() if k in kept or k not in legacy}
    return data


def with_overrides(config: RunConfig, overrides: dict[str, Any], skip_none: bool = True) -> RunConfig:
    """Return `config` with dotted-key overrides applied, e.g. {"task.alpha": 1.0}; None values
    are skipped unless `skip_none` is False (then they set the field to null). Changing
    ``task.name`` or ``model.family`` starts that section from the new type's defaults (the old
    type's fields do not apply). A key outside the config's sections is a one-line ConfigError."""
    data = config.to_dict()
    for section, key in (("task", "name"), ("model", "family")):
        new = overrides.get(f"{section}.{key}")
        if new is not None and new != data[section][key]:
            data[section] = {key: new}
    for dotted, value in overrides.items():
        if value is None and skip_none:
            continue
        target = data
        *path, last = dotted.split(".")
        for key in path:
            require(
                isinstance(target.get(key), dict),
                f"unknown config key {dotted!r}; keys look like task.alpha, model.n_heads, train.lr",
            )
            target = target[key]
        target[last] = value
    return RunConfig.from_dict(data)


def config_schema() -> dict[str, Any]:
    """JSON Schema of a run config file: the task and model sections are a oneOf over the
    registered types, told apart by ``name`` / ``family``."""
    schema = RunConfig.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for key, names, entry, tag in (
        ("task", registry.task_names(), registry.task_entry, "name"),
        ("model", registry.family_names(), registry.family_entry, "family"),
    ):
        refs = {}
        for name in names:
            sub = entry(name).config_type.model_json_schema(ref_template="#/$defs/{model}")
            defs.update(sub.pop("$defs", {}))
            defs[sub["title"]] = sub
            refs[name] = f"#/$defs/{sub['title']}"
        schema["properties"][key] = {
            "oneOf": [{"$ref": ref} for ref in refs.values()],
            "discriminator": {"propertyName": tag, "mapping": refs},
        }
    defs.pop("TaskConfigBase", None)
    defs.pop("FamilyConfigBase", None)
    schema["properties"]["config_version"] = {"const": CONFIG_VERSION}
    return schema


__all__ = [
    "CONTINUOUS_TASKS",
    "FamilyConfigBase",
    "ModelConfig",
    "RunConfig",
    "StageConfig",
    "TaskConfig",
    "TaskConfigBase",
    "TrainConfig",
    "config_schema",
    "with_overrides",
]
