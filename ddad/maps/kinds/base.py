"""What every anomaly-map kind answers, and the registry that finds one by its name.

A kind (``score.map``) is one class: whether it compares the input with reconstructions (so
the reconstruct stage runs the ``reconstruct`` plan for it), whether it learns from good
images first (``fit``), its raw maps of a batch, how they are finished into the reported map
and image score, and what it costs in network passes. The score stage, ``ddad detect``,
``ddad bench``, the reconstruct stage and the params check ask the registry, never a name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple, TypeVar

import numpy as np
import torch

from ddad.diffusion.reconstruct import Plan
from ddad.errors import DdadError
from ddad.maps.denoiser import TrainedDenoiser
from ddad.maps.good_images import BatchMap, GoodImages, batches, in_this_process
from ddad.maps.scoring import ScoreSettings, finished
from ddad.maps.sources import Cost, FeatureSource, feature_source, reads_unet

KINDS: dict[str, type[MapKind]] = {}
K = TypeVar("K", bound="type[MapKind]")


class MapInput(NamedTuple):
    """One image as the model sees it ([C, H, W] in [-1, 1]) and, for the kinds that compare,
    its reconstructions [E, C, H, W] (None otherwise)."""

    image: np.ndarray
    reconstructions: np.ndarray | None = None


class MapKind(ABC):
    """One way to make anomaly maps from ``settings`` (params.yaml ``score``) on ``device``."""

    name: ClassVar[str]
    compares_reconstructions: ClassVar[bool] = False
    learns_from_good_images: ClassVar[bool] = False

    def __init__(
        self,
        settings: ScoreSettings,
        device: torch.device,
        unet: torch.nn.Module | None = None,
        denoiser: TrainedDenoiser | None = None,
    ) -> None:
        self.settings = settings
        self.device = device
        self.typical: np.ndarray | None = None
        self.source: FeatureSource | None = None
        self.setup(unet, denoiser)

    def setup(  # noqa: B027
        self, unet: torch.nn.Module | None, denoiser: TrainedDenoiser | None
    ) -> None:
        """Prepare what the kind maps with (the networks it reads, given where it needs them)."""

    @classmethod
    def needs_unet(cls, settings: ScoreSettings) -> bool:
        """Whether mapping (not reconstructing) reads the trained UNet."""
        return False

    @classmethod
    def needs_denoiser(cls, settings: ScoreSettings) -> bool:
        """Whether mapping reads the category's feature denoiser (ddad.maps.denoiser)."""
        return False

    @classmethod
    def reconstruction_plan(cls, plan: Plan) -> Plan | None:
        """The reconstruction the maps compare with: ``plan``, or None for a kind that reads
        the input alone (the reconstruct stage then stores the inputs only)."""
        return plan if cls.compares_reconstructions else None

    def fit(self, good: GoodImages, over_batches: BatchMap = in_this_process) -> None:  # noqa: B027
        """Learn from good training images (``learns_from_good_images`` kinds); ``over_batches``
        runs the network's batches (ddad.diffusion.distributed.sharded_map shares them)."""

    def fit_for_timing(self, images: np.ndarray) -> None:
        """Learn what costs as much as ``fit`` on real good images (``ddad bench``), from
        ``images`` [N, C, H, W]; what the reference holds does not change the time."""
        self.fit(GoodImages(list(images), []))

    @abstractmethod
    def raw_maps(
        self, inputs: Sequence[MapInput], over_batches: BatchMap = in_this_process
    ) -> list[np.ndarray]:
        """[H, W] maps of ``inputs``, in order, before ``finish``."""

    def finish(self, raw: np.ndarray) -> tuple[np.ndarray, float]:
        """The map as reported and its image score (ddad.maps.scoring.finished, over the
        typical map when ``fit`` made one)."""
        return finished(raw, self.settings, self.typical)

    @abstractmethod
    def cost(self, ensemble: int) -> Cost:
        """Network passes per image of these maps, beyond the reconstruction's, with
        ``ensemble`` reconstructions per image."""

    @abstractmethod
    def describe(self) -> str:
        """The map in a few words, as ``ddad bench`` prints it."""


class FeatureKind(MapKind):
    """A kind that reads features: its ``source`` is the one ``score.backbone`` names, and it
    needs the trained UNet exactly when that is the UNet's."""

    def setup(self, unet: torch.nn.Module | None, denoiser: TrainedDenoiser | None) -> None:
        self.source = feature_source(self.settings, self.device, unet)

    @classmethod
    def needs_unet(cls, settings: ScoreSettings) -> bool:
        return reads_unet(settings)


def each_batch(
    work: Callable[[Sequence[MapInput]], Sequence[np.ndarray]],
    inputs: Sequence[MapInput],
    over_batches: BatchMap = in_this_process,
) -> list[np.ndarray]:
    """The maps ``work`` makes of each of the network's batches of ``inputs``, in one list."""
    return [amap for maps in over_batches(work, batches(inputs)) for amap in maps]


def each_input(
    work: Callable[[MapInput], np.ndarray],
    inputs: Sequence[MapInput],
    over_batches: BatchMap = in_this_process,
) -> list[np.ndarray]:
    """The map ``work`` makes of each of ``inputs``, the network's batches shared as
    ``over_batches`` says."""
    return each_batch(lambda batch: [work(item) for item in batch], inputs, over_batches)


def register(kind: K) -> K:
    """Make ``kind`` known by its ``name`` (a class decorator)."""
    KINDS[kind.name] = kind
    return kind


def kind_class(name: str) -> type[MapKind]:
    """The registered kind called ``name``."""
    try:
        return KINDS[name]
    except KeyError:
        raise DdadError(f"score.map {name!r}: expected one of {', '.join(KINDS)}") from None


def map_kind(
    settings: ScoreSettings,
    device: torch.device,
    unet: torch.nn.Module | None = None,
    denoiser: TrainedDenoiser | None = None,
) -> MapKind:
    """The kind ``settings.map`` names, set up on ``device`` (``unet``: the trained UNet, needed
    where ``needs_unet``; ``denoiser``: the category's feature denoiser, where
    ``needs_denoiser``)."""
    return kind_class(settings.map)(settings, device, unet, denoiser)
