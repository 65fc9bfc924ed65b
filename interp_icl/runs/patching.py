"""Patching sweeps and role experiments on a run's checkpoint, stored in its result store.

`run_patch(run_dir, step, settings)` computes a sweep (always) and stores it (kind "patch");
`patch_sweeps(run_dir, step)` returns the sweeps stored for a checkpoint, running the default
z-by-position sweep first if there is none (one per layer when layers differ in head count).
`run_roles(run_dir, step, n_sequences, seed)` returns the role experiments and the GIH hypothesis
test (`interp_icl.roles`), stored (kind "roles") or computed now.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from interp_icl.jsonable import plain
from interp_icl.patching.experiment import PatchSettings, patch_experiment
from interp_icl.patching.result import PatchResult
from interp_icl.patching.targets import heads_per_layer
from interp_icl.roles import (
    ROLE_SEQUENCES,
    ROLES,
    HypothesisResult,
    RoleResult,
    hypothesis_on_task,
    roles_on_task,
)
from interp_icl.runs import rundir, store
from interp_icl.runs.loading import load_run

PATCH_KIND = "patch"
ROLES_KIND = "roles"
STORE_VERSION = 1
ROLES_STORE_VERSION = 3  # 2: the classifier role's fitted-pattern check; 3: typed checks, head sets


@dataclass
class PatchExperiment:
    run: Path
    step: int
    settings: PatchSettings
    result: PatchResult
    attribution: dict | None  # compare_with_exact of the attribution estimate, if computed

    @property
    def stem(self) -> str:
        """File stem of this sweep's exported tables, e.g. ``patch_z_pos_step500``."""
        return patch_stem(self.settings, self.step)

    def summary(self) -> dict:
        top = self.result.table.reindex(
            self.result.table["effect"].abs().sort_values(ascending=False).index
        ).head(10)
        return {
            "run": str(self.run),
            "step": self.step,
            "settings": asdict(self.settings),
            **self.result.summary,
            "top_patches": top.to_dict(orient="records"),
            "attribution_vs_exact": self.attribution,
            "versions": rundir.package_versions(),
        }


def patch_stem(settings: PatchSettings, step: int) -> str:
    kind = f"ablate_{settings.ablate}" if settings.ablate else "patch"
    layers = "" if settings.layers is None else "_L" + "-".join(map(str, settings.layers))
    return rundir.export_stem(f"{kind}_{settings.site}_{settings.by}{layers}", step)


def _patch_key(settings: PatchSettings) -> dict:
    """What a sweep's numbers depend on (the memory budget only changes how patches are batched)."""
    key = asdict(settings)
    key.pop("memory_mb")
    return {"version": STORE_VERSION, **key}


def run_patch(
    run_dir: str | Path, step: int | str, settings: PatchSettings, progress: bool = False
) -> PatchExperiment:
    """Load the checkpoint, draw inputs, run the sweep (and its attribution estimate), store it."""
    return _compute_and_store(Path(run_dir), load_run(run_dir, step), settings, progress)[0]


def _compute_and_store(
    run_dir: Path, loaded, settings: PatchSettings, progress: bool = False
) -> tuple[PatchExperiment, store.Stored]:
    result, comparison = patch_experiment(loaded.model, loaded.task, settings, progress=progress)
    experiment = PatchExperiment(run_dir, loaded.step, settings, result, comparison)
    stored = store.save(run_dir, PATCH_KIND, loaded.step, _patch_key(settings), result.table, experiment.summary())
    return experiment, stored


@dataclass
class StoredSweep:
    """A stored patching sweep: its export stem, JSON summary and long table."""

    stem: str
    summary: dict
    table: pd.DataFrame


def patch_sweeps(run_dir: str | Path, step: int) -> list[StoredSweep]:
    """Every sweep stored for checkpoint `step`; the default sweep is run and stored if none is."""
    found = [_sweep(s, step) for s in store.entries(Path(run_dir), PATCH_KIND, step)]
    if found:
        return sorted(found, key=lambda s: s.stem)
    loaded = load_run(run_dir, step)
    default = PatchSettings(attribution=False)
    heads = heads_per_layer(loaded.model, default.target())
    # one sweep over all layers, or one per layer when they differ in head count (gih)
    layer_sets = [None] if len(set(heads.values())) == 1 else [(layer,) for layer in heads]
    for layers in layer_sets:
        settings = PatchSettings(attribution=False, layers=layers)
        _, stored = _compute_and_store(Path(run_dir), loaded, settings)
        found.append(_sweep(stored, step))
    return found


def _sweep(stored: store.Stored, step: int) -> StoredSweep:
    settings = {k: v for k, v in stored.settings.items() if k != "version"}
    layers = settings.get("layers")
    settings = PatchSettings(**{**settings, "layers": None if layers is None else tuple(layers)})
    return StoredSweep(patch_stem(settings, step), stored.summary, stored.table)


@dataclass
class RolesReport:
    run: Path
    step: int
    n_sequences: int
    seed: int
    results: dict[str, RoleResult]  # role -> result
    versions: dict[str, str]  # package versions the experiments ran with
    hypothesis: HypothesisResult | None = None  # the GIH hypothesis test (None: no circuit)

    @property
    def table(self) -> pd.DataFrame:
        """Every role's table, stacked, with a ``role`` column first."""
        frames = [r.table.assign(role=role) for role, r in self.results.items()]
        table = pd.concat(frames, ignore_index=True)
        return table[["role", *[c for c in table.columns if c != "role"]]]

    @property
    def verdicts(self) -> dict[str, bool | None]:
        return {role: r.holds for role, r in self.results.items()}

    def summary(self) -> dict:
        return {
            "run": str(self.run),
            "step": self.step,
            "n_sequences": self.n_sequences,
            "seed": self.seed,
            "verdicts": self.verdicts,
            "roles": {role: r.summary() for role, r in self.results.items()},
            "hypothesis": None if self.hypothesis is None else self.hypothesis.to_dict(),
            "versions": self.versions,
        }


def run_roles(
    run_dir: str | Path,
    step: int | str,
    n_sequences: int = ROLE_SEQUENCES,
    seed: int = 0,
    use_stored: bool = True,
) -> RolesReport:
    """The copier, selector and classifier role experiments on a Markov run's checkpoint, on
    `n_sequences` clean sequences of its task (means for ablations from 1024 more)."""
    (chosen,) = rundir.resolve_steps(run_dir, step)

    def compute() -> tuple[pd.DataFrame, dict]:
        loaded = load_run(run_dir, chosen)
        results = roles_on_task(loaded.model, loaded.task, n_sequences, seed)
        hypothesis = hypothesis_on_task(loaded.model, loaded.task, n_sequences, seed)
        report = RolesReport(Path(run_dir), chosen, n_sequences, seed, results, rundir.package_versions(), hypothesis)
        return report.table, plain(report.summary())

    key = {"version": ROLES_STORE_VERSION, "n_sequences": n_sequences, "seed": seed}
    stored = store.fetch(Path(run_dir), ROLES_KIND, chosen, key, compute, use_stored=use_stored)
    table = stored.table
    results = {
        role: RoleResult.from_summary(
            summary, table[table["role"] == role].drop(columns=["role"]).reset_index(drop=True)
        )
        for role, summary in stored.summary["roles"].items()
        if role in ROLES
    }
    hypothesis = stored.summary.get("hypothesis")
    return RolesReport(Path(run_dir), chosen, n_sequences, seed, results, stored.summary["versions"],
                       None if hypothesis is None else HypothesisResult.from_dict(hypothesis))
