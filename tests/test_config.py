"""Run configs: registered task / family types, one-line errors for every bad field, release-1
files, run-time registration, the JSON Schema. Torch-free except where a test says otherwise."""

import contextlib
import io
import json
import math
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import Field, ValidationError

from interp_icl import cli, registry
from interp_icl.config import (
    ModelConfig,
    RunConfig,
    StageConfig,
    TaskConfig,
    TrainConfig,
    config_schema,
    with_overrides,
)
from interp_icl.errors import ConfigError
from interp_icl.registry import FamilyConfigBase, TaskConfigBase, register_family, register_task

V2 = {"config_version": 2}


def first_family_for(task: str) -> str:
    return next(f for f in registry.family_names() if task in registry.family_entry(f).tasks)


def base_for(section: str, name: str) -> dict:
    """A valid run config dict (new format) whose task or model section is of type `name`."""
    if section == "task":
        return {**V2, "task": {"name": name}, "model": {"family": first_family_for(name)}}
    if section == "model":
        return {**V2, "task": {"name": registry.family_entry(name).tasks[0]}, "model": {"family": name}}
    return dict(V2)


def field_schemas():
    """(section, type name, field, JSON-schema of the field) for every field of every
    registered task and family type, the train section, a stage and the top-level fields."""
    for name in registry.task_names():
        props = registry.task_entry(name).config_type.model_json_schema()["properties"]
        yield from (("task", name, f, s) for f, s in props.items() if f != "name")
    for name in registry.family_names():
        props = registry.family_entry(name).config_type.model_json_schema()["properties"]
        yield from (("model", name, f, s) for f, s in props.items() if f != "family")
    for f, s in TrainConfig.model_json_schema()["properties"].items():
        if f != "stages":
            yield "train", "train", f, s
    for f, s in StageConfig.model_json_schema()["properties"].items():
        yield "stage", "stage", f, s
    for f in ("name", "seed"):
        yield "run", "run", f, RunConfig.model_json_schema()["properties"][f]


def _kinds(schema: dict) -> tuple[set[str], dict]:
    """(JSON types the field accepts, its numeric bounds)."""
    options = schema.get("anyOf", [schema])
    kinds, bounds = set(), {}
    for option in options:
        kinds.add(option.get("type", "enum" if "enum" in option or "const" in option else "?"))
        if "enum" in option or "const" in option:
            kinds.add("string")
        bounds.update({k: option[k] for k in ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum") if k in option})
    return kinds, bounds


def _within(value: float, bounds: dict) -> bool:
    return (
        value >= bounds.get("minimum", -math.inf)
        and value > bounds.get("exclusiveMinimum", -math.inf)
        and value <= bounds.get("maximum", math.inf)
        and value < bounds.get("exclusiveMaximum", math.inf)
    )


def candidates(schema: dict) -> list[tuple[object, bool]]:
    """(value, whether the schema alone says it is valid) to try on a field."""
    kinds, bounds = _kinds(schema)
    out: list[tuple[object, bool]] = []
    if "integer" in kinds or "number" in kinds:
        out += [("3", False), (True, False), ([1], False)]
        out += [(math.nan, False), (math.inf, False), (-math.inf, False)]
        if "integer" in kinds:
            out += [(2.5, False), (2.0, False)]
        for value in (-1, 0, -0.5, 0.5):
            if "integer" in kinds and value != int(value):
                continue
            out.append((value, _within(value, bounds)))
        for key in ("maximum", "exclusiveMaximum"):
            if key in bounds:
                out.append((bounds[key] + 1, False))
                out.append((bounds[key], key == "maximum"))
        for key in ("minimum", "exclusiveMinimum"):
            if key in bounds:
                out.append((bounds[key] - 1, False))
    elif "boolean" in kinds:
        out += [("yes", False), (1, False), (None, "null" in kinds)]
    elif "array" in kinds:
        out += [("1,2", False), ([1.5], False), ([True], False), (7, False)]
    elif "string" in kinds:
        out += [(3, False), (None, "null" in kinds), (["a"], False)]
        if "enum" in schema or "const" in schema:
            out.append(("no-such-choice", False))
    return out


def _set(data: dict, section: str, field: str, value: object) -> dict:
    data = json.loads(json.dumps(data, allow_nan=True)) if section != "run" else dict(data)
    if section == "run":
        data[field] = value
    elif section == "stage":
        stage = {"groups": ["rpe"], "steps": 5, field: value}
        data["train"] = {"stages": [stage]}
    elif section == "train":
        data["train"] = {field: value}
    else:
        data[section][field] = value
    return data


CASES = [
    pytest.param(section, name, field, value, valid, id=f"{name}.{field}={value!r}")
    for section, name, field, schema in field_schemas()
    for value, valid in candidates(schema)
]


@pytest.mark.parametrize("section,name,field,value,valid", CASES)
def test_every_field_rejects_bad_values_in_one_line_naming_the_field(
    section, name, field, value, valid, tmp_path
):
    """From the library and from `interp-icl train --config`: one line naming the field, exit 2,
    nothing written."""
    base = base_for(section, name) if section in ("task", "model") else (
        base_for("model", "gih") if section == "stage" else dict(V2)
    )
    data = _set(base, section, field, value)
    dotted = {"task": f"task.{field}", "model": f"model.{field}", "train": f"train.{field}",
              "stage": f"train.stages.{field}", "run": field}[section]
    try:
        RunConfig.from_dict(data)
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert dotted in message, message
    else:
        assert valid, f"{name}.{field} = {value!r} was accepted"
        return
    (tmp_path / "bad.json").write_text(json.dumps(data, allow_nan=True))
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = cli.run(["train", "--config", str(tmp_path / "bad.json"), "--out-dir", str(tmp_path / "runs")])
    assert code == 2 and err.getvalue().count("\n") == 1 and dotted in err.getvalue(), err.getvalue()
    assert err.getvalue().startswith("error: ") and not (tmp_path / "runs").exists()


def test_the_walk_covers_every_registered_type():
    names = {name for _, name, _, _ in field_schemas()}
    assert set(registry.task_names()) <= names and set(registry.family_names()) <= names
    assert len(CASES) > 300


def test_specific_messages():
    cases = [
        ({"task": {"vocab_size": 1}}, "task.vocab_size must be an integer >= 2, got 1"),
        ({"task": {"alpha": math.inf}}, "task.alpha must be a finite number > 0, got inf"),
        ({"train": {"lr": math.nan}}, "train.lr must be a finite number > 0, got nan"),
        ({"train": {"steps": 0}}, "train.steps must be >= 1, got 0"),
        ({"train": {"steps": "many"}}, "invalid config.train"),
        ({"train": {"optimizer": "lion"}}, "unknown optimizer 'lion'"),
        ({"model": {"family": "mamba"}}, "unknown model family 'mamba'"),
        ({"task": {"name": "lm"}}, "unknown task 'lm'"),
        ({"task": {"vocab": 3}}, "unknown key(s) in config.task: vocab"),
        ({"bogus": 1}, "unknown key(s) in config: bogus"),
        ({"task": {"parents": [1, 5]}, "model": {"family": "gih"}}, "beyond the gih window"),
        ({"task": {"parents": [1, 200]}}, "must exceed the largest parent offset"),
        ({"train": {"device": "cudax"}}, "train.device must be auto, cpu or cuda[:N]"),
        ({"train": {"momentum": 1.0}}, "train.momentum must be >= 0 and < 1"),
        ({"model": {"n_layers": 4}}, "model.n_layers must be an integer >= 1 and <= 3"),
        ({"config_version": 3}, "config_version 3 is not supported"),
        ({"task": {"parents": "1,2"}}, "task.parents must be a list, got '1,2'"),
        ({"task": 3}, "config.task must be a JSON object"),
        ({"versions": {"torch": 2}}, "versions.torch must be a string, got 2"),
        ({"model": {"family": "gih"}, "train": {"stages": [{"groups": [], "steps": 2}]}},
         "train.stages.groups must be a list of at least 1 item(s), got []"),
        ({"train": {"stages": [{"groups": ["rpe"], "steps": 3}]}}, "only available for the gih"),
        ({"model": {"family": "gih"}, "train": {"stages": [{"groups": ["x"], "steps": 3}]}},
         "unknown gih parameter group(s) ['x']"),
    ]
    for data, message in cases:
        with pytest.raises(ConfigError) as info:
            RunConfig.from_dict(data)
        assert message in str(info.value) and "\n" not in str(info.value), (data, str(info.value))


def test_duplicate_parents_are_an_error_and_parents_are_sorted():
    with pytest.raises(ConfigError, match=r"task.parents has duplicate offset\(s\) 1"):
        RunConfig.from_dict({"task": {"parents": [1, 1]}})
    with pytest.raises(ConfigError, match=r"duplicate offset\(s\) 2, 3"):
        TaskConfig(parents=(3, 2, 1, 2, 3), seq_len=10)
    assert TaskConfig(parents=[3, 1], seq_len=10).parents == (1, 3)


def test_task_family_mismatch():
    with pytest.raises(ConfigError, match="cannot learn task 'markov'.*needs model.family 'standard' or 'gih'"):
        RunConfig.from_dict({"task": {"name": "markov"}, "model": {"family": "lsa"}})
    with pytest.raises(ConfigError, match="needs model.family 'lsa' or 'block'"):
        RunConfig.from_dict({"task": {"name": "regression"}, "model": {"family": "gih"}})


def test_cross_checks_live_in_the_family_types():
    cfg = RunConfig.from_dict({"task": {"name": "classification", "n_labels": 8, "n_pairs": 8, "burstiness": 2},
                               "model": {"family": "classifier"}})
    assert cfg.model.n_labels == 8  # filled from the task by ClassifierConfig.check_with_task
    with pytest.raises(ConfigError, match="model.window \\(3\\) must be smaller than task.seq_len \\(3\\)"):
        RunConfig.from_dict({"task": {"name": "repeated", "block_len": 3, "n_repeats": 1}, "model": {"family": "gih"}})


# The release-1 writer (dataclasses.asdict of the union TaskConfig / ModelConfig), verbatim.
LEGACY_QUICKSTART = """{"name": "quickstart", "seed": 0, "task": {"name": "markov", "vocab_size": 3,
"parents": [1, 2], "alpha": 0.1, "seq_len": 101, "block_len": 50, "n_repeats": 2, "x_dim": 10,
"n_points": 10, "x_scale": 1.0, "noise": 0.0, "n_classes": 512, "n_labels": 32, "n_pairs": 8,
"item_dim": 63, "epsilon": 0.1, "zipf_alpha": 0.0, "burstiness": 2, "p_bursty": 1.0, "class_seed": 0},
"model": {"family": "standard", "n_heads": 2, "d_model": 64, "d_head": 32, "d_mlp": 256,
"attn_only": false, "norm": "LN", "positional": "standard", "act_fn": "relu", "window": 3,
"max_degree": 2, "w_plus": 3.0, "w_minus": 0.1, "c_init": 0.01, "a_init": 0.01, "n_layers": 1,
"init_variance": 0.002, "n_labels": null}, "train": {"steps": 2000, "batch_size": 32, "data": "online",
"n_train": 10000, "optimizer": "adamw", "lr": 0.006, "weight_decay": 0.0, "momentum": 0.0,
"schedule": "cosine", "warmup_steps": 50, "grad_clip": 1.0, "loss_positions": "all", "stages": [],
"eval_every": 200, "n_eval": 512, "oracle_beta": 0.01, "checkpoint_every": 500, "device": "auto"},
"versions": {"torch": "2.9.1"}}"""

LEGACY_CLASSIFICATION = """{"name": "icl-classification", "seed": 0, "task": {"name": "classification",
"vocab_size": 3, "parents": [1, 2], "alpha": 0.1, "seq_len": 17, "block_len": 50, "n_repeats": 2,
"x_dim": 10, "n_points": 10, "x_scale": 1.0, "noise": 0.0, "n_classes": 512, "n_labels": 32,
"n_pairs": 8, "item_dim": 63, "epsilon": 0.1, "zipf_alpha": 0.0, "burstiness": 2, "p_bursty": 1.0,
"class_seed": 0}, "model": {"family": "classifier", "n_heads": 1, "d_model": 128, "d_head": 128,
"d_mlp": 128, "attn_only": false, "norm": "LN", "positional": "standard", "act_fn": "relu",
"window": 3, "max_degree": 2, "w_plus": 3.0, "w_minus": 0.1, "c_init": 0.01, "a_init": 0.01,
"n_layers": 1, "init_variance": 0.002, "n_labels": 32}, "train": {"steps": 20000, "batch_size": 128,
"data": "online", "n_train": 10000, "optimizer": "sgd", "lr": 0.01, "weight_decay": 1e-06,
"momentum": 0.0, "schedule": "constant", "warmup_steps": 0, "grad_clip": null,
"loss_positions": "all", "stages": [], "eval_every": 500, "n_eval": 1024, "oracle_beta": 0.01,
"checkpoint_every": 2000, "device": "auto"}, "versions": {}}"""


def test_release_1_config_files_load(tmp_path):
    from interp_icl.presets import icl_classification, quickstart

    path = tmp_path / "config.json"
    path.write_text(LEGACY_QUICKSTART)
    cfg = RunConfig.from_file(path)
    # the quickstart preset of release 1 had 2 heads of 32 per layer (4 of 16 since 2026-12-02)
    release_1 = with_overrides(quickstart(), {"model.n_heads": 2, "model.d_head": 32})
    assert cfg.model_dump(exclude={"versions"}) == release_1.model_dump(exclude={"versions"})
    assert cfg.model.n_layers == 2  # release 1's standard model always had two layers
    assert cfg.versions == {"torch": "2.9.1"}
    assert RunConfig.from_dict(json.loads(LEGACY_CLASSIFICATION)) == icl_classification()
    # what this release writes is marked and strict: another family's field is an error there
    written = json.loads(cfg.to_json())
    assert written["config_version"] == 2 and "window" not in written["model"]
    assert RunConfig.from_dict(written) == cfg
    written["model"]["window"] = 3
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in config.model: window"):
        RunConfig.from_dict(written)
    # an unmarked dict still rejects keys no release had, and honours fields of its own type
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in config.task: vocab"):
        RunConfig.from_dict({"task": {"vocab": 3}})
    assert RunConfig.from_dict({"model": {"n_layers": 3}}).model.n_layers == 3


def test_factories_and_updated_copies_validate():
    assert type(TaskConfig()).__name__ == "MarkovConfig" and TaskConfig().seq_len == 101
    assert ModelConfig().family == "standard" and ModelConfig().n_layers == 2
    assert TaskConfig(name="regression", n_points=4).seq_len == 5
    task = TaskConfig(name="classification")
    assert task.updated(n_classes=16).n_classes == 16
    with pytest.raises(ConfigError, match="task.n_classes must be an integer >= 1"):
        task.updated(n_classes=0)
    with pytest.raises(ValidationError, match="frozen"):
        task.n_classes = 3


def test_with_overrides_switches_section_types():
    from interp_icl.presets import quickstart

    cfg = with_overrides(quickstart(), {"model.family": "gih", "model.window": 4, "task.alpha": 1.0})
    assert cfg.model.family == "gih" and cfg.model.window == 4 and cfg.task.alpha == 1.0
    reg = with_overrides(quickstart(), {"task.name": "regression", "model.family": "lsa", "task.x_dim": 3})
    assert reg.task.x_dim == 3 and reg.model.n_layers == 1
    with pytest.raises(ConfigError, match=r"unknown key\(s\) in config.task: vocab_size"):
        with_overrides(reg, {"task.vocab_size": 5})


@pytest.fixture
def toy_entries():
    yield
    registry._FAMILIES.pop("toy", None)
    registry._TASKS.pop("toy-copy", None)


class ToyConfig(FamilyConfigBase):
    """A family defined by a test: width of a toy model."""

    family: Literal["toy"] = "toy"
    width: int = Field(8, ge=1)
    scale: float = Field(1.0, gt=0)


class ToyTaskConfig(TaskConfigBase):
    name: Literal["toy-copy"] = "toy-copy"
    seq_len: int = Field(5, ge=2)


def test_a_family_registered_at_run_time_round_trips(toy_entries, tmp_path):
    built = []
    register_family("toy", ToyConfig, lambda c, d, n, s: built.append((c.width, d, n, s)) or "model",
                    tasks=("markov", "toy-copy"))
    register_task("toy-copy", ToyTaskConfig, lambda c: ("task", c.seq_len))
    cfg = RunConfig.from_dict({"task": {"name": "toy-copy", "seq_len": 7}, "model": {"family": "toy", "width": 3}})
    assert isinstance(cfg.model, ToyConfig) and cfg.model.width == 3
    path = tmp_path / "toy.json"
    path.write_text(cfg.to_json())
    assert RunConfig.from_file(path) == cfg
    assert registry.family_entry("toy").make(cfg.model, 4, 7, 0) == "model" and built == [(3, 4, 7, 0)]
    assert registry.task_entry("toy-copy").make(cfg.task) == ("task", 7)
    with pytest.raises(ConfigError, match="model.width must be an integer >= 1, got 0"):
        RunConfig.from_dict({"model": {"family": "toy", "width": 0}})
    with pytest.raises(ConfigError, match="cannot learn task 'regression'"):
        RunConfig.from_dict({"task": {"name": "regression"}, "model": {"family": "toy"}})
    schema = config_schema()
    assert schema["properties"]["model"]["discriminator"]["mapping"]["toy"] == "#/$defs/ToyConfig"
    assert schema["$defs"]["ToyConfig"]["properties"]["scale"]["exclusiveMinimum"] == 0


def test_register_requires_a_matching_tag():
    with pytest.raises(ConfigError, match="must default to 'other'"):
        register_family("other", ToyConfig, lambda *a: None, tasks=("markov",))


def test_schema_is_a_one_of_over_registered_types():
    schema = config_schema()
    task, model = schema["properties"]["task"], schema["properties"]["model"]
    assert set(task["discriminator"]["mapping"]) == set(registry.task_names())
    assert set(model["discriminator"]["mapping"]) == set(registry.family_names())
    standard = schema["$defs"]["StandardConfig"]["properties"]["n_layers"]
    assert (standard["minimum"], standard["maximum"], standard["default"]) == (1, 3, 2)
    json.dumps(schema)


def test_importing_and_validating_configs_imports_no_torch():
    code = (
        "import sys; from interp_icl.config import RunConfig; import interp_icl.presets as p; "
        "[RunConfig.from_dict(f().to_dict()) for f in p.PRESETS.values()]; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
