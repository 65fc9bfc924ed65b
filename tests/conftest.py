"""Shared test helpers. Torch runs on one thread in the tests (and in every process they start:
the variable is inherited by CLI subprocesses, notebook kernels and Ray workers), as a sweep cell
does. Most models here are tiny, and two threads on a 2-core machine that is also running other
work (Ray cells, a notebook kernel, another job) wait on each other far more than they gain: with
another job running, the suite took 34 min on two threads and 11 min on one. On an idle machine
two threads are faster for the larger models (test_roles.py 34 s against 57 s, the quickstart
smoke test 41 s against 63 s), about a minute of the suite. Set OMP_NUM_THREADS to choose another
count (OMP_NUM_THREADS=2: torch's default on 2 cores)."""

import os
import shutil
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported

import pytest
import torch

from interp_icl.config import RunConfig

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # also if torch was imported first


def tiny_config(**sections) -> RunConfig:
    """A run that trains in about a second: small standard model, short sequences."""
    data = {
        "name": "tiny",
        "seed": 1,
        "task": {"vocab_size": 3, "parents": [1], "alpha": 0.5, "seq_len": 24},
        "model": {"family": "standard", "d_model": 16, "d_head": 8, "n_heads": 2, "d_mlp": 32},
        "train": {"steps": 40, "batch_size": 8, "lr": 3e-3, "eval_every": 10, "n_eval": 32, "checkpoint_every": 20},
    }
    for key, value in sections.items():
        if isinstance(value, dict):
            data[key] = {**data.get(key, {}), **value}
        else:
            data[key] = value
    return RunConfig.from_dict(data)


@pytest.fixture
def tiny():
    return tiny_config


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """The suite runs on two pytest-xdist workers (`-n 2 --dist loadgroup` in pyproject.toml).
    Every test that uses the shared Ray instance goes to one worker, so one instance serves them
    all; the tests of a module with a module-scoped fixture go to one worker together, so the
    fixture (a trained model, the zoo's verdicts) is computed once."""
    for item in items:
        if "local_ray" in item.fixturenames:
            group = "ray"
        elif any(defs[-1].scope == "module" for defs in item._fixtureinfo.name2fixturedefs.values()):
            group = item.module.__name__
        else:
            continue
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture(scope="session")
def local_ray():
    """One local 2-CPU Ray instance for every test that runs a sweep (`run_sweep` uses a running
    instance), started when a test first asks for it and shut down when the session ends. A test
    that needs another instance shuts this one down and restarts it with `start_local_ray(2)`."""
    import ray

    from interp_icl.sweeps.driver import start_local_ray

    if not ray.is_initialized():
        start_local_ray(2)
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def tiny_trained_run(tmp_path_factory) -> Path:
    """`tiny_config()` trained once for the session (40 steps, 13 checkpoints), for the tests that
    need *a* trained run. Read it only; a test that writes into a run (analysis caches, reports,
    role results) works on its own copy (`copy_run`): the same files its own training would write."""
    from interp_icl.runs import create_run

    run = tmp_path_factory.mktemp("shared") / "tiny"
    create_run(tiny_config(), run, progress=False).run()
    return run


def copy_run(run: Path, to: Path) -> Path:
    """A copy of the run directory `run` at `to` (which must not exist); returns `to`."""
    shutil.copytree(run, to)
    return to
