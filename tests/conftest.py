import pytest

from interp_icl.config import RunConfig


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
