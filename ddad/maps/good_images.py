"""The good images a map learns from: which training images form the bank and which the
typical map, that map itself, and the batches every network pass is cut into.

The split depends on the file list alone, so the score stage, ``ddad detect`` and ``ddad
bench`` pick the same images; the batches are cut the same way however many processes share
them, so a map comes out the same bytes with one rank or several.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

import numpy as np

from ddad.data.layout import train_images
from ddad.maps.scoring import ScoreSettings

BATCH = 32  # images per network pass
T = TypeVar("T")
R = TypeVar("R")
BatchMap = Callable[[Callable[[T], R], Sequence[T]], list[R]]


def in_this_process(work: Callable[[T], R], batches: Sequence[T]) -> list[R]:
    """Every batch here, in order: the ``BatchMap`` of one process
    (ddad.diffusion.distributed.sharded_map is the one that shares them over ranks)."""
    return [work(batch) for batch in batches]


def batches(items: Sequence[T]) -> list[Sequence[T]]:
    """``items`` cut into the network's batches of ``BATCH``."""
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


class GoodSplit(NamedTuple):
    """Training images for the bank and, disjoint from them, for the typical map."""

    bank: list[Path]
    reference: list[Path]


class GoodImages(NamedTuple):
    """Good images as the model sees them ([C, H, W] arrays): the ``bank`` a map searches and,
    apart from it, the ``typical`` ones whose mean map says what is usual at each position."""

    bank: Sequence[np.ndarray]
    typical: Sequence[np.ndarray]


def good_split(paths: Sequence[Path], bank_images: int, reference_images: int) -> GoodSplit:
    """Disjoint training images for the bank and for the typical map, chosen by a fixed seed.

    The reference images take at most half of ``paths`` (a small category keeps a bank); with
    ``reference_images = 0`` the bank is the same as without a typical map.
    """
    order = np.random.default_rng(0).permutation(len(paths))
    reference_count = min(reference_images, len(paths) // 2)
    reference = sorted(order[:reference_count])
    bank = sorted(order[reference_count : reference_count + bank_images])
    return GoodSplit([paths[i] for i in bank], [paths[i] for i in reference])


def fit_images(root: Path, meta: dict) -> list[Path]:
    """A trained category's training images under ``root`` except those held out in ``meta``
    (the train stage's meta.json, so their scores stay unbiased for the threshold)."""
    held_out = {root / p for p in meta["validation_images"]}
    return [path for path in train_images(root, meta["category"]) if path not in held_out]


def training_split(root: Path, meta: dict, settings: ScoreSettings) -> GoodSplit:
    """The bank and typical-map images of a trained category: its ``fit_images`` split by
    ``good_split``."""
    return good_split(fit_images(root, meta), settings.bank_images, settings.reference_images)


def fold_splits(
    paths: Sequence[Path], folds: int, settings: ScoreSettings
) -> list[tuple[list[Path], GoodSplit]]:
    """Each fold of ``paths`` (every ``folds``-th image, so images taken in sequence spread over
    all folds) with the bank and typical-map split of the other images: scored against a
    reference they are no part of, the training images give the threshold many more good scores
    than the held-out ones alone. At most one fold per image; none with fewer than two."""
    count = min(folds, len(paths))
    if count < 2:
        return []
    split = []
    for fold in range(count):
        others = [path for index, path in enumerate(paths) if index % count != fold]
        reference = good_split(others, settings.bank_images, settings.reference_images)
        split.append((list(paths[fold::count]), reference))
    return split


def split_images(split: GoodSplit, load: Callable[[Path], np.ndarray]) -> GoodImages:
    """The bank and typical-map images of ``split``, each read by ``load`` (a path to the
    model's [C, H, W] input)."""
    return GoodImages([load(p) for p in split.bank], [load(p) for p in split.reference])


def training_good_images(
    root: Path, meta: dict, settings: ScoreSettings, load: Callable[[Path], np.ndarray]
) -> GoodImages:
    """The ``training_split`` images of a trained category, read by ``load``."""
    return split_images(training_split(root, meta, settings), load)


def typical_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of good images' maps at each position, floored at 1 % of its overall mean.

    The floor keeps a division finite where every good image matched the bank exactly.
    """
    if not len(maps):
        raise ValueError("typical_map needs at least one good image's map")
    mean = np.mean(np.stack(maps), axis=0)
    return np.maximum(mean, 0.01 * mean.mean())
