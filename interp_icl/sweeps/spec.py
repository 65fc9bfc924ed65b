"""Sweep specs: a base run config, axes of dotted config keys, seeds, and what each cell does.

    {"base": {"preset": "quickstart"},
     "axes": {"task.parents": [[1, 2], [1, 3]], "train.steps": [200]},
     "zip": [["task.vocab_size", "task.seq_len"]],          (optional)
     "seeds": [0, 1],
     "do": ["train", "analyze", "roles"]}

* ``base``: ``{"preset": NAME}`` or ``{"config": {...run config...}}``;
* ``axes``: dotted config keys (``task.alpha``, ``model.n_layers``, ``train.lr``, ...) to lists of
  values. The settings are the full grid over the axes, except that the axes of each ``zip`` group
  vary together (equal lengths, one setting per position);
* ``seeds``: every setting runs once per seed (``seed`` of the run config);
* ``do``: ``train`` (always first), then any of ``analyze`` (the analysis passes), ``roles`` (the
  role experiments), ``patch`` (the default z-by-position patching sweep, as the report runs it),
  ``dynamics`` (the copier, selector and classifier passes at every checkpoint and the order in
  which the roles form, as the report's dynamics section), ``circuit`` (edge scores, the
  faithfulness curve and which edges of the GIH hypothesis the circuit contains, as
  `interp-icl circuit`); the sizes of the analysis passes (also those of ``dynamics``), of the
  role experiments and of the circuit step in ``analysis`` / ``roles`` / ``circuit`` (optional:
  ``{"method": "exact", "n_sequences": 256, "ig_steps": 16, "threshold": 0.005}``).

`SweepSpec.cells()` builds and validates every cell's run config before anything runs; a bad
value names its cell. Cells are named ``s<setting index>-seed<seed>`` and their settings are
listed by `SweepSpec.settings()`.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from interp_icl.config import RunConfig, with_overrides
from interp_icl.errors import ConfigError, InterpICLError, require
from interp_icl.jsonable import read_json_file

STEPS = ("train", "analyze", "roles", "patch", "dynamics", "circuit")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class AnalysisSizes(_Strict):
    """Sequences and prior kernels of the analysis passes in each cell, and which passes the
    ``analyze`` step runs (all by default; the theory pass's cost grows as d^(2·window))."""

    n_sequences: int = Field(256, ge=2)
    n_kernels: int = Field(1000, ge=2)
    passes: list[Literal["copier", "selector", "classifier", "head_scores", "theory"]] = Field(
        default_factory=lambda: ["copier", "selector", "classifier", "head_scores", "theory"], min_length=1
    )


class RoleSizes(_Strict):
    """Sequences of the role experiments in each cell."""

    n_sequences: int = Field(256, ge=2)


class CircuitSizes(_Strict):
    """The ``circuit`` step's method and sizes (`interp_icl.runs.circuits.run_circuit`)."""

    method: Literal["exact", "eap", "eap-ig", "acdc"] = "exact"
    n_sequences: int = Field(256, ge=4)
    ig_steps: int = Field(16, ge=1)
    threshold: float = Field(0.005, ge=0)


class SweepSpec(_Strict):
    """A validated sweep spec (see the module docstring)."""

    base: dict[str, Any]
    axes: dict[str, list[Any]] = Field(default_factory=dict)
    zip: list[list[str]] = Field(default_factory=list)
    seeds: list[int] = Field(min_length=1)
    do: list[Literal["train", "analyze", "roles", "patch", "dynamics", "circuit"]] = Field(default_factory=lambda: ["train"])
    analysis: AnalysisSizes = Field(default_factory=AnalysisSizes)
    roles: RoleSizes = Field(default_factory=RoleSizes)
    circuit: CircuitSizes = Field(default_factory=CircuitSizes)

    @model_validator(mode="after")
    def _check(self) -> SweepSpec:
        require(
            set(self.base) in ({"preset"}, {"config"}),
            'sweep base must be {"preset": NAME} or {"config": {...}}',
        )
        for key, values in self.axes.items():
            require(values, f"sweep axis {key!r} has no values")
            require(key not in ("seed", "name"), f"{key!r} is not an axis; seeds go in \"seeds\"")
        zipped = [key for group in self.zip for key in group]
        require(len(zipped) == len(set(zipped)), "an axis appears in two zip groups")
        for group in self.zip:
            require(len(group) >= 2, f"a zip group needs two or more axes, got {group}")
            unknown = [key for key in group if key not in self.axes]
            require(not unknown, f"zip names axes that are not in \"axes\": {', '.join(unknown)}")
            lengths = {len(self.axes[key]) for key in group}
            require(len(lengths) == 1, f"zipped axes {group} have different lengths {sorted(lengths)}")
        require(len(set(self.seeds)) == len(self.seeds), "sweep seeds must be distinct")
        require(all(s >= 0 for s in self.seeds), "sweep seeds must be >= 0")
        require(self.do and self.do[0] == "train", 'a sweep cell starts with "train": "do" must begin with it')
        require(len(set(self.do)) == len(self.do), "\"do\" names a step twice")
        return self

    @classmethod
    def from_dict(cls, data: Any) -> SweepSpec:
        require(isinstance(data, dict), "a sweep spec must be a JSON object")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            error = exc.errors()[0]
            where = ".".join(str(p) for p in error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            raise ConfigError(f"sweep spec{' ' + where if where else ''}: {message}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> SweepSpec:
        data = read_json_file(path, "sweep spec")
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def base_config(self) -> RunConfig:
        from interp_icl.presets import PRESETS

        if "preset" in self.base:
            name = self.base["preset"]
            require(name in PRESETS, f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
            return PRESETS[name]()
        return RunConfig.from_dict(self.base["config"])

    def settings(self) -> list[dict[str, Any]]:
        """Every setting: {axis: value}, in grid order (axes in spec order, zip groups together)."""
        groups: list[list[str]] = []
        zipped = {key: group for group in self.zip for key in group}
        for key in self.axes:
            if key not in zipped:
                groups.append([key])
            elif zipped[key][0] == key:
                groups.append(zipped[key])
        choices = [
            [dict(zip(group, values)) for values in zip(*(self.axes[k] for k in group))]
            for group in groups
        ]
        return [
            {k: v for part in combo for k, v in part.items()} for combo in itertools.product(*choices)
        ] or [{}]

    def cells(self) -> list[Cell]:
        """Every (setting, seed) cell with its validated run config; errors name the cell."""
        base = self.base_config()
        cells = []
        for index, setting in enumerate(self.settings()):
            for seed in self.seeds:
                name = cell_name(index, seed)
                overrides = {**setting, "seed": seed, "name": name}
                try:
                    config = with_overrides(base, overrides, skip_none=False)
                except InterpICLError as exc:
                    where = ", ".join(f"{k}={json.dumps(v)}" for k, v in setting.items())
                    raise ConfigError(f"sweep cell {name} ({where or 'base'}): {exc}") from None
                cells.append(Cell(name, index, seed, setting, config))
        return cells


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: setting `index` (its axis values `setting`) with `seed`."""

    name: str
    index: int
    seed: int
    setting: dict[str, Any]
    config: RunConfig


def cell_name(index: int, seed: int) -> str:
    return f"s{index:03d}-seed{seed}"
