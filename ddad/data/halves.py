"""Which test images choose settings and which report them: a seeded half of each defect kind.

Settings chosen on the images they are then reported on look better than they are
(docs/accuracy.md, "How every figure here is measured"). So the test
images of a category are split once, per defect kind (good counts as a kind): look at the tuning
half while choosing, report the confirmation half.

An image's half follows from a seeded hash of its key ranked within its kind, not from list
order: the split is the same on every machine and in every run, and adding or removing one image
moves at most one other image across.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np


def confirmation_half(keys: Sequence[str], kinds: Sequence[str], seed: int = 0) -> np.ndarray:
    """True for the images held for confirmation: of each kind's ``n`` images, the ``n - n // 2``
    whose seeded hash of the key ranks lowest (an odd image out goes to confirmation, so a kind
    with one image is still reported). ``keys`` must be distinct."""
    if len(keys) != len(kinds):
        raise ValueError(f"{len(keys)} keys but {len(kinds)} kinds; pass one kind per key")
    if len(set(keys)) != len(keys):
        raise ValueError("keys must be distinct: they name the images")
    rank = {key: _hashed(key, seed) for key in keys}
    confirm = np.zeros(len(keys), dtype=bool)
    kinds_array = np.asarray(kinds, dtype=object)
    for kind in set(kinds):
        members = np.flatnonzero(kinds_array == kind)
        ordered = sorted(members, key=lambda i: rank[keys[i]])
        confirm[ordered[: len(ordered) - len(ordered) // 2]] = True
    return confirm


def _hashed(key: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()
