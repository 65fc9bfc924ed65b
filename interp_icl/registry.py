"""The one table of tasks and model families, and the base of every config section.

A **task** registers its name, its config type and a factory ``config -> Task``; a **family**
registers its name, its config type, a build function ``(config, d_vocab, n_ctx, seed) -> model``,
the task names it can learn and the parameter groups staged training may name. `RunConfig`
(``interp_icl.config``) picks the config types from this table by ``task.name`` and
``model.family``; `make_task` and `build_model` pick the factories. Factories may be given as
``"module:attribute"`` strings, imported on first use, so registering imports no torch.

The built-in entries are declared in the torch-free modules ``interp_icl.builtin_tasks`` and
``interp_icl.builtin_families`` (their factories live in ``interp_icl.tasks.*`` and
``interp_icl.models.*``) and load on the first look-up. A new family is one module::

    from typing import Literal
    from pydantic import Field
    from interp_icl.registry import FamilyConfigBase, register_family

    class TinyConfig(FamilyConfigBase):
        \"\"\"A one-layer toy: d_model = width of the residual stream.\"\"\"
        family: Literal["tiny"] = "tiny"
        d_model: int = Field(16, ge=1)

    def build_tiny(config: TinyConfig, d_vocab: int, n_ctx: int, seed: int):
        from my_package.tiny import TinyModel  # torch may be imported here
        return TinyModel(config, d_vocab, n_ctx, seed)

    register_family("tiny", TinyConfig, build_tiny, tasks=("markov",))

Every config section is a frozen pydantic model with strict types (an integer given as a float,
string or bool is an error), finite floats only and unknown keys rejected; every error is a
one-line `ConfigError` naming the dotted field, e.g.
``invalid config.train: train.steps must be >= 1, got 0``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass
from importlib import import_module
from typing import Any, ClassVar, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from interp_icl.errors import ConfigError, InterpICLError, require

CONFIG_VERSION = 2  # written as "config_version" by RunConfig.to_dict; absent in release-1 files


# ----- config sections --------------------------------------------------------------------------
class Section(BaseModel):
    """Base of every config section: frozen, strict, finite floats, unknown keys rejected.

    `section` is the dotted prefix of the section's fields in messages ("task", "model", "train").
    With `integer_words`, a range error on an integer field says "must be an integer >= N"
    (the task and model wording), else "must be >= N" (the train wording).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)
    section: ClassVar[str] = "config"
    integer_words: ClassVar[bool] = True
    # Fields this type gained after release 1 whose names release-1 files also hold with another
    # type's meaning (the standard family's n_layers was the lsa/block default 1): a legacy file's
    # value is dropped and the default applies.
    not_in_release_1: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self)) from None

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Any:
        """pydantic's `model_validate`, with errors as one-line `ConfigError`s."""
        try:
            return super().model_validate(obj, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls) from None

    @model_validator(mode="before")
    @classmethod
    def _plain_input(cls, data: Any) -> Any:
        """Reject unknown keys with one message naming all of them; JSON lists become tuples."""
        if isinstance(data, BaseModel):
            return data
        where = "config" if cls.section == "config" else f"config.{cls.section}"
        require(isinstance(data, dict), f"{where} must be a JSON object, got {data!r}")
        unknown = sorted(set(data) - set(cls.model_fields))
        require(not unknown, f"unknown key(s) in {where}: {', '.join(map(str, unknown))}")
        tuples = {k for k, f in cls.model_fields.items() if get_origin(f.annotation) is tuple}
        return {k: tuple(v) if k in tuples and isinstance(v, list) else v for k, v in data.items()}

    def updated(self, **changes: Any) -> Any:
        """A validated copy with `changes` applied (the frozen model's `dataclasses.replace`)."""
        return type(self)(**{**dict(self), **changes})


class TaskConfigBase(Section):
    """Base of a task's config type: a `name` field with a Literal default, its own fields and
    rules, and `seq_len` (a field or a property: tokens per sequence, the last one the target of
    last-position training). `continuous` tasks have vector tokens (they bring their own loss)."""

    section: ClassVar[str] = "task"
    continuous: ClassVar[bool] = False
    name: str


class FamilyConfigBase(Section):
    """Base of a model family's config type: a `family` field with a Literal default and its
    sizes. `check_with_task` holds the rules that need the task (window vs parents, label counts)
    and returns the config to use (it may fill fields from the task)."""

    section: ClassVar[str] = "model"
    family: str

    def check_with_task(self, task: TaskConfigBase) -> FamilyConfigBase:
        return self


# ----- the table -------------------------------------------------------------------------------
Factory = Callable[..., Any] | str


@dataclass(frozen=True)
class TaskEntry:
    name: str
    config_type: type[TaskConfigBase]
    factory: Factory  # config -> Task, or "module:attribute"

    def make(self, config: TaskConfigBase) -> Any:
        return _resolve(self.factory)(config)


@dataclass(frozen=True)
class FamilyEntry:
    name: str
    config_type: type[FamilyConfigBase]
    build: Factory  # (config, d_vocab, n_ctx, seed) -> hooked model, or "module:attribute"
    tasks: tuple[str, ...]  # the task names this family can learn
    param_groups: tuple[str, ...] = ()  # names train.stages may use; () = no staged training

    def make(self, config: FamilyConfigBase, d_vocab: int, n_ctx: int, seed: int) -> Any:
        return _resolve(self.build)(config, d_vocab, n_ctx, seed)


_TASKS: dict[str, TaskEntry] = {}
_FAMILIES: dict[str, FamilyEntry] = {}
_builtins_loaded = False


def register_task(name: str, config_type: type[TaskConfigBase], factory: Factory) -> None:
    """Register (or replace) task `name`: configs with ``name == name`` validate as `config_type`
    and `make_task` builds them with `factory` (a callable or a "module:attribute" string)."""
    _check_type(name, config_type, TaskConfigBase, "name")
    _TASKS[name] = TaskEntry(name, config_type, factory)


def register_family(
    name: str,
    config_type: type[FamilyConfigBase],
    build: Factory,
    tasks: tuple[str, ...],
    param_groups: tuple[str, ...] = (),
) -> None:
    """Register (or replace) model family `name`: configs with ``family == name`` validate as
    `config_type`, `build_model` calls `build(config, d_vocab, n_ctx, seed)`, and a run pairs it
    only with the task names in `tasks`; `param_groups` are what ``train.stages`` may train."""
    _check_type(name, config_type, FamilyConfigBase, "family")
    require(len(tasks) > 0, f"family {name!r} must name at least one task it can learn")
    _FAMILIES[name] = FamilyEntry(name, config_type, build, tuple(tasks), tuple(param_groups))


def task_names() -> tuple[str, ...]:
    _load_builtins()
    return tuple(_TASKS)


def family_names() -> tuple[str, ...]:
    _load_builtins()
    return tuple(_FAMILIES)


def task_entry(name: str) -> TaskEntry:
    _load_builtins()
    require(name in _TASKS, f"unknown task {name!r}; choose one of {', '.join(_TASKS)}")
    return _TASKS[name]


def family_entry(name: str) -> FamilyEntry:
    _load_builtins()
    require(
        name in _FAMILIES, f"unknown model family {name!r}; choose one of {', '.join(_FAMILIES)}"
    )
    return _FAMILIES[name]


def task_config(data: TaskConfigBase | dict[str, Any]) -> TaskConfigBase:
    """The registered config type of ``data["name"]`` (default "markov") built from `data`."""
    return _section(data, TaskConfigBase, "task", "name", "markov", task_entry)


def family_config(data: FamilyConfigBase | dict[str, Any]) -> FamilyConfigBase:
    """The registered config type of ``data["family"]`` (default "standard") built from `data`."""
    return _section(data, FamilyConfigBase, "model", "family", "standard", family_entry)


def _section(data: Any, base: type, section: str, tag: str, default: str, entry: Callable) -> Any:
    if isinstance(data, base):
        return data
    require(isinstance(data, dict), f"config.{section} must be a JSON object, got {data!r}")
    name = data.get(tag, default)
    require(isinstance(name, str), f"{section}.{tag} must be a string, got {name!r}")
    return entry(name).config_type(**data)


def _check_type(name: str, config_type: type, base: type, key: str) -> None:
    require(
        isinstance(config_type, type) and issubclass(config_type, base),
        f"{name!r}: the config type must subclass {base.__name__}",
    )
    require(
        config_type.model_fields[key].default == name,
        f"{config_type.__name__}.{key} must default to {name!r}",
    )


def _resolve(factory: Factory) -> Callable[..., Any]:
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        return getattr(import_module(module), attribute)
    return factory


def _load_builtins() -> None:
    global _builtins_loaded
    if not _builtins_loaded:
        _builtins_loaded = True
        import_module("interp_icl.builtin_tasks")
        import_module("interp_icl.builtin_families")


# ----- one-line messages from pydantic errors --------------------------------------------------
_KINDS = {int: "an integer", float: "a finite number", bool: "true or false", str: "a string"}
_ERROR_WORDS = {"tuple_type": "a list", "dict_type": "a JSON object", "model_type": "a JSON object",
                "string_type": "a string"}
_BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
           (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))


def config_error(exc: ValidationError, model: type[BaseModel]) -> ConfigError:
    """The first error of `exc` as one line naming the dotted field."""
    error = exc.errors(include_url=False)[0]
    inner = (error.get("ctx") or {}).get("error")
    if isinstance(inner, InterpICLError):  # a rule of ours, raised inside a validator
        return ConfigError(str(inner))
    section = getattr(model, "section", "config")
    loc = tuple(str(part) for part in error["loc"])
    where = ".".join(loc) if section == "config" else ".".join((section, *loc))
    head = f"invalid config.{section}: " if section != "config" else "invalid config: "
    value, kind = error.get("input"), error["type"]
    if kind == "literal_error":
        choices = error["ctx"]["expected"]
        return ConfigError(f"{head}unknown {loc[-1]} {value!r}: {where} must be one of {choices}")
    if kind == "missing":
        return ConfigError(f"{head}{where} is required")
    if isinstance(value, tuple):  # shown as the JSON list it came from
        value = list(value)
    if kind == "too_short":
        return ConfigError(
            f"{head}{where} must be a list of at least {error['ctx']['min_length']} item(s), "
            f"got {value!r}"
        )
    annotation, bounds = _field_info(model, error["loc"])
    words = _KINDS.get(annotation, "") or _ERROR_WORDS.get(kind, "")
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than") and (
        annotation is float or not getattr(model, "integer_words", True)
    ):
        words = ""  # a number of the right type out of range: say only the range
    rule = " ".join(part for part in (words, bounds) if part) or error["msg"].lower()
    return ConfigError(f"{head}{where} must be {rule}, got {value!r}")


def _field_info(model: type[BaseModel], loc: tuple) -> tuple[type | None, str]:
    """(plain type, bounds text such as '>= 1 and <= 3' or ', or null') of the field at `loc`."""
    annotation: Any = model
    metadata: list = []
    optional = False
    for part in loc:
        if isinstance(part, int):
            args = [a for a in get_args(annotation) if a is not Ellipsis]
            annotation = args[0] if args else None
        elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
            field = annotation.model_fields.get(part)
            if field is None:
                return None, ""
            annotation, metadata = field.annotation, field.metadata
        else:
            return None, ""
        args = get_args(annotation)
        if get_origin(annotation) in (Union, types.UnionType):
            optional = type(None) in args
            annotation = next((a for a in args if a is not type(None)), None)
    bounds = [f"{sign} {getattr(m, attr)}" for m in metadata for cls, attr, sign in _BOUNDS
              if isinstance(m, cls)]
    text = " and ".join(bounds) + (" or null" if optional else "")
    return annotation if isinstance(annotation, type) else None, text.strip()
