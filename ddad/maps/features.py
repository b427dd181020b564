"""Anomaly maps from the denoiser's own features: distance to the nearest good-image feature.

The trained UNet is a feature extractor that has only seen good parts. Each position of a test
image is described by the activations of a few encoder blocks (averaged over a 3x3 neighbourhood
so a feature describes a small patch, not one pixel), and scored by its distance (after
whitening over the good bank, ``score.whiten``) to the closest feature of a good training image
near the same place (``score.search_radius`` feature cells,
so parts need only be roughly aligned; -1 searches anywhere), divided by that distance's typical
value there. A defect is a patch unlike every good patch around it. For aligned parts
``score.feature_model: gaussian`` scores each patch against a Gaussian of the good features at
its position instead (ddad.maps.position_gaussian). docs/accuracy.md measures each of these choices
on real photographs.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import NamedTuple, TypeVar

import faiss
import numpy as np
import torch
import torch.nn.functional as F
from guided_diffusion.nn import timestep_embedding

from ddad.data.layout import train_images
from ddad.maps.backbone import backbone_features, load_backbone, seen_size
from ddad.maps.position_gaussian import PositionGaussian, fit_position_gaussian
from ddad.maps.scoring import ScoreSettings, blur
from ddad.progress import progress_bar

FEATURE_BLOCKS = (1, 3)  # the first blocks at full and at half resolution
_NEIGHBOURHOOD = 3
_CHUNK = 4096
_BATCH = 32
T = TypeVar("T")
R = TypeVar("R")
BatchMap = Callable[[Callable[[T], R], Sequence[T]], list[R]]


def in_this_process(work: Callable[[T], R], batches: Sequence[T]) -> list[R]:
    """Every batch here, in order: the ``BatchMap`` of one process."""
    return [work(batch) for batch in batches]


def unet_features(
    model: torch.nn.Module, images: torch.Tensor, blocks: Sequence[int] = FEATURE_BLOCKS
) -> torch.Tensor:
    """Patch features [N, D, H/2, W/2] of ``images`` [N, C, H, W] in [-1, 1], at t = 0.

    ``blocks`` index ``model.input_blocks`` (a guided-diffusion UNet's); each block's output is
    averaged over a 3x3 neighbourhood and resized to half the image size, then the blocks are
    stacked. The UNet runs only up to the last of them: the rest of the pass (most of it: the
    middle and the whole decoder) would be thrown away.
    """
    if not blocks:
        raise ValueError("unet_features needs at least one block")
    captured: dict[int, torch.Tensor] = {}
    t = torch.zeros(len(images), dtype=torch.long, device=images.device)
    with torch.no_grad():
        emb = model.time_embed(timestep_embedding(t, model.model_channels))
        h = images.type(model.dtype)
        for index, block in enumerate(model.input_blocks[: max(blocks) + 1]):
            h = block(h, emb)
            if index in blocks:
                captured[index] = h
    size = (images.shape[-2] // 2, images.shape[-1] // 2)
    pooled = [
        F.avg_pool2d(captured[b].float(), _NEIGHBOURHOOD, 1, _NEIGHBOURHOOD // 2) for b in blocks
    ]
    return torch.cat(
        [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pooled], 1
    )


@dataclass(frozen=True)
class FeatureSource:
    """What describes each patch of a batch of model inputs: ``extract`` maps images [N, C, H, W]
    on ``device`` to features [N, D, h, w] there (the UNet's or a pretrained backbone's)."""

    extract: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device

    def __call__(self, batch: Sequence[np.ndarray]) -> torch.Tensor:
        """Features of a batch of [C, H, W] arrays."""
        return self.extract(torch.from_numpy(np.stack(batch)).to(self.device))


def feature_source(unet: torch.nn.Module, settings: ScoreSettings) -> FeatureSource:
    """The features ``settings.backbone`` names: the trained ``unet``'s (``unet``) or an
    ImageNet-trained EfficientNet-Lite's (ddad.maps.backbone) at ``settings.backbone_size``
    (ddad.maps.backbone.seen_size), on the UNet's device."""
    device = next(unet.parameters()).device
    if settings.backbone == "unet":
        return FeatureSource(lambda images: unet_features(unet, images), device)
    net = load_backbone(settings.backbone).to(device)

    def extract(images: torch.Tensor) -> torch.Tensor:
        size = seen_size(settings.backbone_size, images.shape[-2:])
        return backbone_features(
            net, images, size, settings.backbone_pooling, settings.backbone_strides
        )

    return FeatureSource(extract, device)


def feature_passes(settings: ScoreSettings, ensemble: int) -> int:
    """Feature-source passes per image of ``settings``' map: the input's for ``features``, the
    input's and each of its ``ensemble`` reconstructions' for ``ddad``, none for the
    reconstruction error."""
    return {"features": 1, "ddad": 1 + ensemble}.get(settings.map, 0)


def unet_passes(settings: ScoreSettings, ensemble: int) -> int:
    """Of ``feature_passes``, the partial UNet passes: all of them when the UNet is the
    source, none with a pretrained backbone."""
    return feature_passes(settings, ensemble) if settings.backbone == "unet" else 0


def feature_bank(features: Iterable[torch.Tensor], max_vectors: int, seed: int = 0) -> torch.Tensor:
    """Every position of every [N, D, h, w] feature batch as rows [M, D], at most ``max_vectors``.

    A random subset (chosen by ``seed``) keeps the nearest-neighbour search affordable; with
    fewer vectors than the cap all are kept.
    """
    rows = torch.cat([f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]) for f in features])
    if len(rows) <= max_vectors:
        return rows
    keep = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed))[:max_vectors]
    return rows[keep]


def nearest_distance_maps(
    features: torch.Tensor, bank: torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """[N, *size] maps: each position's Euclidean distance to its nearest bank row.

    On the CPU faiss's exact search (IndexFlatL2) does it, several times faster than chunked
    torch.cdist here and in constant memory; on a GPU the chunked distances are fast already.
    """
    n, d, h, w = features.shape
    queries = features.permute(0, 2, 3, 1).reshape(-1, d)
    bank = bank.to(queries)
    if queries.device.type == "cpu":
        index = faiss.IndexFlatL2(d)
        index.add(np.ascontiguousarray(bank.float().numpy()))
        squared, _ = index.search(np.ascontiguousarray(queries.float().numpy()), 1)
        nearest = torch.from_numpy(squared).clamp_min(0).sqrt().to(queries.dtype)
    else:
        nearest = torch.cat([torch.cdist(q, bank).min(dim=1).values for q in queries.split(_CHUNK)])
    nearest = nearest.reshape(n, 1, h, w)
    return F.interpolate(nearest, size=size, mode="bilinear", align_corners=False)[:, 0]


def nearby_distance_maps(
    features: torch.Tensor, bank_maps: torch.Tensor, radius: int, size: tuple[int, int]
) -> torch.Tensor:
    """[N, *size] maps: each position's Euclidean distance to the nearest bank patch at most
    ``radius`` feature positions away (in rows and in columns), in any bank image.

    ``bank_maps`` [M, D, h, w] are the good images' whole feature maps, the same h x w as
    ``features``. Near the border the window is cut off (replicate padding repeats the last
    row and column, which are in the window already). Searching near the same place keeps a
    dark blob in the middle of a part from matching a dark border patch, so blobs light up
    inside and not only at their rim.

    The padded bank is laid out one grid cell after another (_replicate_padded_cells), and the
    queries on the same grid (the padding columns hold zeros whose results are dropped), so the
    bank cells one offset (dy, dx) pairs with every query are one contiguous slice: each offset
    is one batched product (|q|^2 + |b|^2 - 2 q.b) that reads the bank in place. Copying each
    query's window out first cost 3-8x more here, most of it in memory traffic.
    """
    n, d, h, w = features.shape
    width = w + 2 * radius
    count = h * width - 2 * radius  # grid cells up to the last real query
    cells = _replicate_padded_cells(bank_maps.to(features), radius).reshape(-1, d, len(bank_maps))
    norms = cells.square().sum(dim=1, keepdim=True)  # [(h+2r)(w+2r), 1, M]
    queries = F.pad(features, (0, 2 * radius)).permute(2, 3, 0, 1).reshape(h * width, n, d)
    queries = queries[:count].contiguous()
    nearest = torch.full((count, n), torch.inf, dtype=queries.dtype, device=queries.device)
    for dy, dx in itertools.product(range(2 * radius + 1), repeat=2):
        window = slice(dy * width + dx, dy * width + dx + count)
        squared = torch.baddbmm(norms[window], queries, cells[window], alpha=-2)
        nearest = torch.minimum(nearest, squared.min(dim=2).values)
    nearest = (nearest + queries.square().sum(dim=2)).clamp_min(0).sqrt()
    nearest = F.pad(nearest.T, (0, 2 * radius)).reshape(n, 1, h, width)[..., :w]
    return F.interpolate(nearest, size=size, mode="bilinear", align_corners=False)[:, 0]


def _replicate_padded_cells(bank_maps: torch.Tensor, radius: int) -> torch.Tensor:
    """[h+2r, w+2r, D, M]: ``bank_maps`` [M, D, h, w] padded by ``radius`` cells that repeat the
    border, one grid cell after another. Gathered by index rather than by F.pad: CUDA's
    replicate padding refuses tensors of 2^31 values or more, which 500 bank maps of the 256
    model's 512 channels at 128 x 128 exceed."""
    _, _, h, w = bank_maps.shape
    rows = torch.arange(-radius, h + radius, device=bank_maps.device).clamp(0, h - 1)
    cols = torch.arange(-radius, w + radius, device=bank_maps.device).clamp(0, w - 1)
    return bank_maps.permute(2, 3, 1, 0)[rows][:, cols]


class GoodSplit(NamedTuple):
    """Training images for the bank and, disjoint from them, for the typical map."""

    bank: list[Path]
    reference: list[Path]


class Whitening(NamedTuple):
    """An affine map of feature channels: subtract ``mean`` [D], then multiply by ``matrix``
    [D, D], so that Euclidean distances become Mahalanobis distances under the bank's spread."""

    mean: torch.Tensor
    matrix: torch.Tensor

    def apply(self, features: torch.Tensor) -> torch.Tensor:
        """Rows [M, D] or maps [N, D, h, w], mapped along D."""
        moved = features.movedim(1, -1)
        mapped = (moved - self.mean.to(moved)) @ self.matrix.to(moved)
        return mapped.movedim(-1, 1)


@dataclass(frozen=True)
class GoodReference:
    """What the good training images say about a category: the bank of their patch features,
    and, when set, the typical nearest-bank distance at each position of the map.

    Dividing a map by ``typical`` (ddad.maps.scoring.finished) makes "unusual for this position" the
    image score: a patch near the image border is far from every bank patch even in a good image
    (borders are few and varied), so raw distances called borders defects. On the magnetic tiles
    dividing raises image AUROC from 0.870 to 0.919 (docs/accuracy.md). ``whitening``, when
    set, maps every feature before the search (the bank holds mapped features; see
    ``whitened``). ``gaussian``, when set, replaces the search (the bank is then empty).
    """

    bank: torch.Tensor
    typical: np.ndarray | None = None
    radius: int = -1
    whitening: Whitening | None = None
    gaussian: PositionGaussian | None = None

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, *size] nearest-bank distances of [N, D, h, w] ``features``: anywhere in the bank
        (``radius`` < 0, ``bank`` rows [M, D]) or near the same position (``bank`` maps
        [M, D, h, w]); with ``gaussian``, Mahalanobis distances to its position's Gaussian."""
        if self.gaussian is not None:
            return self.gaussian.distances(features, size)
        if self.whitening is not None:
            features = self.whitening.apply(features)
        if self.radius < 0:
            return nearest_distance_maps(features, self.bank, size)
        return nearby_distance_maps(features, self.bank, self.radius, size)


def whitened(reference: GoodReference) -> GoodReference:
    """``reference`` with its bank whitened: channels centred and decorrelated over the bank.

    The UNet's channels differ in scale and move together, so without this a few loud,
    redundant directions decide which good patch is nearest. The covariance is shrunk toward
    its mean variance by 0.1 % so a direction that the bank never varies in cannot blow a
    distance up. On the magnetic tiles it raises image AUROC from 0.904 to 0.919
    (docs/accuracy.md).
    """
    mean, covariance = _channel_moments(reference.bank)
    shrink = 1e-3 * covariance.diagonal().mean()
    covariance += shrink * torch.eye(len(covariance), dtype=covariance.dtype, device=mean.device)
    precision_root = torch.linalg.cholesky(torch.linalg.inv(covariance))
    whitening = Whitening(mean.float(), precision_root.float())
    bank = torch.cat([whitening.apply(chunk) for chunk in reference.bank.split(_BATCH)])
    return replace(reference, bank=bank, whitening=whitening)


def searched_as(features: list[torch.Tensor], settings: ScoreSettings) -> GoodReference:
    """A reference over good ``features`` (batches of [N, D, h, w] maps) searched the way
    ``settings`` ask: near the same place (``search_radius`` >= 0, the maps as the bank) or
    anywhere (-1, at most ``bank_vectors`` rows of them), whitened when ``settings.whiten``;
    per-position Gaussians of the maps, fitted batch by batch, for ``feature_model:
    gaussian``; no typical map yet.

    The list is emptied once the bank holds its contents: a large model's batches and bank
    would otherwise fill memory twice, and three times while the bank is whitened (3.7 GB
    each for the ball screws' 236 images at 256 x 640).
    """
    if settings.feature_model == "gaussian":
        empty = features[0].new_empty(0, features[0].shape[1])
        reference = GoodReference(empty, gaussian=fit_position_gaussian(features))
    elif settings.search_radius < 0:
        reference = GoodReference(feature_bank(features, settings.bank_vectors))
    else:
        reference = GoodReference(torch.cat(features), radius=settings.search_radius)
    features.clear()
    if settings.whiten and reference.gaussian is None:
        return whitened(reference)
    return reference


def _channel_moments(bank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean [D] and covariance [D, D] of the channels of rows [M, D] or maps [M, D, h, w] over
    every row or position, in float64 but one chunk at a time (a float64 copy of a large
    model's bank would not fit)."""
    channels = bank.shape[1]
    count = bank.numel() // channels
    total = torch.zeros(channels, dtype=torch.float64, device=bank.device)
    products = torch.zeros(channels, channels, dtype=torch.float64, device=bank.device)
    for chunk in bank.split(_BATCH):
        columns = chunk.transpose(0, 1).reshape(channels, -1).double()
        total += columns.sum(dim=1)
        products += columns @ columns.T
    mean = total / count
    return mean, (products - count * torch.outer(mean, mean)) / (count - 1)


def good_split(paths: Sequence[Path], bank_images: int, reference_images: int) -> GoodSplit:
    """Disjoint training images for the bank and for the typical map, chosen by a fixed seed.

    The reference images take at most half of ``paths`` (a small category keeps a bank); with
    ``reference_images = 0`` the bank is the same as without a typical map. The choice depends
    on the file list alone, so the score stage and ``ddad detect`` pick the same images.
    """
    order = np.random.default_rng(0).permutation(len(paths))
    reference_count = min(reference_images, len(paths) // 2)
    reference = sorted(order[:reference_count])
    bank = sorted(order[reference_count : reference_count + bank_images])
    return GoodSplit([paths[i] for i in bank], [paths[i] for i in reference])


def typical_map(maps: Sequence[np.ndarray]) -> np.ndarray:
    """The mean of good images' maps at each position, floored at 1 % of its overall mean.

    The floor keeps a division finite where every good image matched the bank exactly.
    """
    if not len(maps):
        raise ValueError("typical_map needs at least one good image's map")
    mean = np.mean(np.stack(maps), axis=0)
    return np.maximum(mean, 0.01 * mean.mean())


def training_split(root: Path, meta: dict, settings: ScoreSettings) -> GoodSplit:
    """The bank and typical-map images of a trained category: its training images under
    ``root`` except those held out in ``meta`` (the train stage's meta.json, so their scores
    stay unbiased for the threshold), split by ``good_split``."""
    held_out = {root / p for p in meta["validation_images"]}
    fit = [path for path in train_images(root, meta["category"]) if path not in held_out]
    return good_split(fit, settings.bank_images, settings.reference_images)


def training_reference(
    source: FeatureSource,
    root: Path,
    meta: dict,
    load: Callable[[Path], np.ndarray],
    settings: ScoreSettings,
    over_batches: BatchMap = in_this_process,
) -> GoodReference:
    """The good reference of a trained category, built from its ``training_split`` images.

    ``load`` turns a path into the model's [C, H, W] input; ``over_batches`` runs the network's
    passes (ddad.diffusion.distributed.sharded_map splits them over ranks).
    """
    split = training_split(root, meta, settings)
    good = [load(path) for path in split.bank]
    features = [f.to(source.device) for f in over_batches(source, _batches(good))]
    undivided = searched_as(features, settings)
    if not split.reference:
        return undivided
    references = [load(path) for path in split.reference]
    raw = feature_anomaly_maps(
        source,
        references,
        undivided,
        settings.sigma,
        settings.kernel_size,
        over_batches=over_batches,
    )
    return replace(undivided, typical=typical_map(raw))


def feature_anomaly_maps(
    source: FeatureSource,
    images: Sequence[np.ndarray],
    reference: GoodReference,
    sigma: float,
    kernel_size: int,
    desc: str | None = None,
    over_batches: BatchMap = in_this_process,
) -> list[np.ndarray]:
    """Nearest-good-feature maps of ``images`` ([C, H, W]), blurred like the error maps; not yet
    divided by ``reference.typical`` (ddad.maps.scoring.finished does that).

    ``desc`` shows a progress bar with that label; ``over_batches`` as in
    ``training_reference``.
    """
    batches = _batches(images)
    bar = progress_bar(total=len(batches), desc=desc, unit="batch", disable=desc is None)

    def mapped(batch: Sequence[np.ndarray]) -> np.ndarray:
        nearest = reference.distances(source(batch), batch[0].shape[-2:])
        bar.update(1)
        return blur(nearest.double().cpu(), sigma, kernel_size).numpy()

    maps = [amap for batch_maps in over_batches(mapped, batches) for amap in batch_maps]
    bar.close()
    return maps


def _batches(images: Sequence[np.ndarray]) -> list[Sequence[np.ndarray]]:
    """The network's batches, cut the same way however many processes share them."""
    return [images[i : i + _BATCH] for i in range(0, len(images), _BATCH)]
