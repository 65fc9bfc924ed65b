"""The one way the package makes random generators.

Every random draw of a run comes from ``generator(seed, *labels)``: the same labels give the same
stream, different labels give independent ones, and no stream depends on how many draws another
stream made (so resuming mid-run reproduces the uninterrupted draws exactly). Functions that take
a plain integer seed from their caller (a model's initialisation, a pass's resampling) use
``seeded(seed)``; no module calls ``torch.Generator`` itself.
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed determined by the run seed and the labels."""
    text = "/".join([str(seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seeded(seed: int) -> torch.Generator:
    """A CPU generator seeded with `seed` itself."""
    return torch.Generator().manual_seed(seed)


def generator(seed: int, *labels: object) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(seed, *labels)``."""
    return seeded(derive_seed(seed, *labels))
