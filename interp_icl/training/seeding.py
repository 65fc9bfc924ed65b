"""Named, independent random streams derived from the run seed.

Every random draw of a run comes from ``generator(seed, *labels)``: the same labels give the same
stream, different labels give independent ones, and no stream depends on how many draws another
stream made (so resuming mid-run reproduces the uninterrupted draws exactly).
"""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *labels: object) -> int:
    """A 63-bit seed determined by the run seed and the labels."""
    text = "/".join([str(seed), *map(str, labels)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *labels: object) -> torch.Generator:
    """A CPU generator seeded with ``derive_seed(seed, *labels)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *labels))
