"""The nearest good patch: searches over a bank of good images' features, one class per way
of searching, each with ``distances(features, size)``.

``NearbySearch`` looks near the same place (``score.search_radius`` feature cells, so parts
need only be roughly aligned); ``AnywhereSearch`` looks anywhere in a bank of at most
``score.bank_vectors`` rows (radius -1); ``WhitenedSearch`` maps features through the bank's
whitening first (``score.whiten``: Mahalanobis distances); ``coreset`` keeps a greedy share of
either bank (``score.coreset``); ddad.maps.position_gaussian's
``PositionGaussian`` answers the same call for ``score.feature_model: gaussian``.
docs/accuracy.md measures each choice on real photographs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from typing import NamedTuple, Protocol

import faiss
import numpy as np
import torch
import torch.nn.functional as F

from ddad.diffusion.threads import one_thread
from ddad.maps.position_gaussian import fit_position_gaussian
from ddad.maps.scoring import ScoreSettings

FEATURE_MODELS = ("nearest", "gaussian")  # score.feature_model
_CHUNK = 4096
_PRODUCT_VALUES = 2**20  # products one step of the nearby search holds on the CPU (4 MiB, cached)
_PRODUCT_VALUES_CUDA = 2**26  # ... and on a GPU, where fewer, larger products run faster
_BATCH = 32
_CORESET_VALUES = 2**24  # values one chunk of cells' coreset holds (64 MiB of float32)
_GRAM_SIZE = 2048  # sets of at most this many vectors pick their coreset off a Gram matrix
_SKETCH = 128  # dimensions the rows' coreset is chosen in, by a random projection


class Search(Protocol):
    """What a map asks of the good bank: distances of features to it."""

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, *size] distances of [N, D, h, w] ``features``, resized bilinearly to ``size``."""


def _resized(nearest: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(nearest, size=size, mode="bilinear", align_corners=False)[:, 0]


@dataclass(frozen=True)
class AnywhereSearch:
    """The nearest of ``bank`` rows [M, D], wherever in a good image they came from."""

    bank: torch.Tensor

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Each position's Euclidean distance to its nearest bank row.

        On the CPU faiss's exact search (IndexFlatL2) does it, several times faster than chunked
        torch.cdist and in constant memory; on a GPU the chunked distances are fast already.
        """
        n, d, h, w = features.shape
        queries = features.permute(0, 2, 3, 1).reshape(-1, d)
        bank = self.bank.to(queries)
        if queries.device.type == "cpu":
            index = faiss.IndexFlatL2(d)
            index.add(np.ascontiguousarray(bank.float().numpy()))
            squared, _ = index.search(np.ascontiguousarray(queries.float().numpy()), 1)
            nearest = torch.from_numpy(squared).clamp_min(0).sqrt().to(queries.dtype)
        else:
            nearest = torch.cat(
                [torch.cdist(q, bank).min(dim=1).values for q in queries.split(_CHUNK)]
            )
        return _resized(nearest.reshape(n, 1, h, w), size)


@dataclass(frozen=True)
class NearbySearch:
    """The nearest patch of good images' whole feature maps at most ``radius`` feature cells
    away, in rows and in columns. ``cells`` [h, w, D, M] holds, at each cell of the grid (the
    queries' h x w), the M good maps' vectors there as columns (``nearby_search`` lays maps
    out so); ``bank`` is the same bytes as maps [M, D, h, w].

    Searching near the same place keeps a dark blob in the middle of a part from matching a
    dark border patch, so blobs light up inside and not only at their rim.
    """

    cells: torch.Tensor
    radius: int

    @property
    def bank(self) -> torch.Tensor:
        """The good maps [M, D, h, w], a view of ``cells``."""
        return self.cells.permute(3, 2, 0, 1)

    @cached_property
    def norms(self) -> torch.Tensor:
        """[h, w, 1, M] squared norms of the cells' vectors, computed once for every query."""
        return self.cells.square().sum(dim=2, keepdim=True)

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Each position's Euclidean distance to the nearest bank patch in its window, in any
        bank image. Near the border the window is cut off.

        The search goes bank cell by bank cell: the queries that one bank cell's M vectors
        serve (the (2r+1)^2 positions around it, in every query image) are one batched product
        (|b|^2 - 2 q.b, |q|^2 added at the end) against those vectors as they lie, so each bank
        vector is read from memory once per batch of queries rather than once per offset, and
        the products are large enough to run near the CPU's peak. Each (query, bank cell) pair
        outside the grid is computed on a zero query and never read.
        """
        r, side = self.radius, 2 * self.radius + 1
        n, d, h, w = features.shape
        cells, norms = self.cells.to(features), self.norms.to(features)
        slots = side * side * n
        grid = F.pad(features, (r, r, r, r)).permute(2, 3, 0, 1).contiguous()  # [h+2r, w+2r, n, D]
        row, cell = grid.stride(0), grid.stride(1)
        windows = grid.as_strided((h, w, side, side * n, d), (row, cell, row, d, 1))
        budget = _PRODUCT_VALUES_CUDA if features.is_cuda else _PRODUCT_VALUES
        step = max(1, budget // (slots * max(cells.shape[-1], d)))
        served = features.new_empty(h, w, slots)  # [bank cell, its window's query slot]
        for y, x in itertools.product(range(h), range(0, w, step)):
            queries = windows[y, x : x + step].reshape(-1, slots, d)
            products = torch.baddbmm(
                norms[y, x : x + step], queries, cells[y, x : x + step], alpha=-2
            )
            served[y, x : x + step] = products.min(dim=2).values
        # query (y, x) is slot (a, b) of bank cell (y+r-a, x+r-b): pad the bank cells by r
        # with inf, as cells past the border serve nothing, then read each slot's shifted grid
        padded = served.new_full((h + 2 * r, w + 2 * r, side, side, n), torch.inf)
        padded[r : r + h, r : r + w] = served.reshape(h, w, side, side, n)
        nearest = served.new_full((h, w, n), torch.inf)
        for a, b in itertools.product(range(side), repeat=2):
            shifted = padded[2 * r - a : 2 * r - a + h, 2 * r - b : 2 * r - b + w, a, b]
            nearest = torch.minimum(nearest, shifted)
        squared = nearest + features.square().sum(dim=1).permute(1, 2, 0)
        return _resized(squared.clamp_min(0).sqrt().permute(2, 0, 1)[:, None], size)


def nearby_search(maps: Sequence[torch.Tensor], radius: int) -> NearbySearch:
    """The ``NearbySearch`` over good feature maps, batches of [N, D, h, w], laid out cell by
    cell batch by batch (a concatenated copy of the maps would double their memory)."""
    _, d, h, w = maps[0].shape
    cells = maps[0].new_empty(h, w, d, sum(len(batch) for batch in maps))
    start = 0
    for batch in maps:
        cells[..., start : start + len(batch)] = batch.permute(2, 3, 1, 0)
        start += len(batch)
    return NearbySearch(cells, radius)


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
class WhitenedSearch:
    """``inner`` (whose bank holds whitened features) asked with features whitened the same way."""

    inner: AnywhereSearch | NearbySearch
    whitening: Whitening

    def distances(self, features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """The inner search's distances of the whitened ``features``."""
        return self.inner.distances(self.whitening.apply(features), size)


def whitened(search: AnywhereSearch | NearbySearch) -> WhitenedSearch:
    """``search`` over its bank whitened (``fit_whitening``).

    Feature channels differ in scale and move together, so without this a few loud, redundant
    directions decide which good patch is nearest.
    """
    whitening = fit_whitening(search.bank)
    if isinstance(search, AnywhereSearch):
        rows = torch.cat([whitening.apply(chunk) for chunk in search.bank.split(_BATCH)])
        return WhitenedSearch(AnywhereSearch(rows), whitening)
    cells = torch.empty_like(search.cells)
    for y, row in enumerate(search.cells):  # [w, D, M]: the vectors along dimension 1
        cells[y] = whitening.apply(row)
    return WhitenedSearch(NearbySearch(cells, search.radius), whitening)


def fit_whitening(bank: torch.Tensor) -> Whitening:
    """The whitening of rows [M, D] or maps [M, D, h, w]: channels centred and decorrelated
    over every row or position. The covariance is shrunk toward its mean variance by 0.1 % so
    a direction that the bank never varies in cannot blow a distance up."""
    # MKL's long products and LAPACK round by the thread count (ddad.diffusion.threads)
    with one_thread():
        mean, covariance = _channel_moments(bank)
        shrink = 1e-3 * covariance.diagonal().mean()
        eye = torch.eye(len(covariance), dtype=covariance.dtype, device=mean.device)
        precision_root = torch.linalg.cholesky(torch.linalg.inv(covariance + shrink * eye))
    return Whitening(mean.float(), precision_root.float())


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


def coreset(
    search: AnywhereSearch | NearbySearch | WhitenedSearch, share: float
) -> AnywhereSearch | NearbySearch | WhitenedSearch:
    """``search`` over a greedy k-center coreset of ``share`` of its bank, in the space it
    searches (the whitened one inside a ``WhitenedSearch``): at each grid cell, ceil(share * M)
    of the M maps' vectors there for ``NearbySearch``; ceil(share * rows) of the rows for
    ``AnywhereSearch``, chosen on a random projection to ``_SKETCH`` dimensions when the rows
    have more. A share that keeps every vector returns ``search`` itself, so a share of 1
    searches exactly the bank's bytes.

    Fewer vectors cost proportionally less to search, and farthest-first picks keep every good
    vector close to a kept one (PatchCore's memory-bank subsampling), which a random subset of
    the same size does not: it misses rare kinds of good patch.
    """
    if isinstance(search, WhitenedSearch):
        return replace(search, inner=coreset(search.inner, share))
    count = math.ceil(share * len(search.bank))
    if count >= len(search.bank):
        return search
    if isinstance(search, NearbySearch):
        return replace(search, cells=_cell_coreset(search.cells, count))
    return replace(search, bank=_row_coreset(search.bank, count))


def _cell_coreset(cells: torch.Tensor, count: int) -> torch.Tensor:
    """[h, w, D, count]: at each cell of ``cells`` [h, w, D, M], the ``count`` of its M
    vectors that ``_farthest_first`` picks, in the order picked. The map index no longer names
    one good image; ``NearbySearch`` reads each cell's vectors as a set. Cells go in chunks
    whose vectors and Gram matrices hold about ``_CORESET_VALUES`` values; each chunk's vectors
    are laid out row by row first, as a product of a permuted view rounds by the thread count
    (ddad.diffusion.threads)."""
    h, w, d, m = cells.shape
    flat = cells.reshape(h * w, d, m)
    kept = cells.new_empty(h * w, d, count)
    step = max(1, _CORESET_VALUES // (m * max(m, d)))
    for start in range(0, h * w, step):
        vectors = flat[start : start + step].transpose(1, 2).contiguous()  # [c, M, D]
        picks = _farthest_first(vectors, count)
        rows = torch.arange(len(vectors), device=cells.device)[:, None]
        kept[start : start + step] = vectors[rows, picks].transpose(1, 2)
    return kept.reshape(h, w, d, count)


def _row_coreset(rows: torch.Tensor, count: int, seed: int = 0) -> torch.Tensor:
    """``count`` of ``rows`` [R, D] that ``_farthest_first`` picks, comparing them on a seeded
    Gaussian projection to ``_SKETCH`` dimensions when D is larger (random projections keep
    distances roughly, and each pick reads every row once)."""
    sketch = rows.float()
    if rows.shape[1] > _SKETCH:
        generator = torch.Generator().manual_seed(seed)
        projection = torch.randn(rows.shape[1], _SKETCH, generator=generator) / _SKETCH**0.5
        sketch = sketch @ projection.to(sketch.device)
    return rows[_farthest_first(sketch[None], count)[0]]


def _farthest_first(vectors: torch.Tensor, count: int) -> torch.Tensor:
    """[B, count] indices of a greedy k-center coreset of each of B sets of M vectors
    [B, M, D]: first the vector nearest the set's mean, then, one pick at a time, the vector
    farthest from every pick so far. A picked vector is never picked again, so duplicates in a
    set (a bank of repeated images) still yield ``count`` distinct indices.

    Sets of at most ``_GRAM_SIZE`` vectors compute every product up front in one batched
    matrix product, so each pick reads one row of it; larger sets (a bank of rows) compute a
    pick's products with every vector when it is picked, in memory that grows only with M."""
    batch = torch.arange(len(vectors), device=vectors.device)
    norms = vectors.square().sum(dim=2)  # [B, M]
    gram = torch.bmm(vectors, vectors.mT) if vectors.shape[1] <= _GRAM_SIZE else None
    centred = vectors - vectors.mean(dim=1, keepdim=True)
    picks = [centred.square().sum(dim=2).argmin(dim=1)]
    nearest_pick = torch.full_like(norms, torch.inf)  # squared distances to it
    for _ in range(count - 1):
        last = picks[-1]
        if gram is None:
            products = torch.bmm(vectors, vectors[batch, last][:, :, None])[:, :, 0]
        else:
            products = gram[batch, last]
        squared = norms - 2 * products + norms[batch, last][:, None]
        nearest_pick = torch.minimum(nearest_pick, squared)
        nearest_pick[batch, last] = -torch.inf
        picks.append(nearest_pick.argmax(dim=1))
    return torch.stack(picks, dim=1)


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


def search_for(features: list[torch.Tensor], settings: ScoreSettings) -> Search:
    """The search over good ``features`` (batches of [N, D, h, w] maps) that ``settings`` ask
    for: near the same place (``search_radius`` >= 0, the maps as the bank) or anywhere (-1, at
    most ``bank_vectors`` rows of them), whitened when ``settings.whiten``, then cut to a
    ``settings.coreset`` share of its bank; per-position Gaussians of the maps, fitted batch by
    batch, for ``feature_model: gaussian``.

    The list is emptied once the bank holds its contents: a large model's batches and bank
    would otherwise fill memory twice, and three times while the bank is whitened (gigabytes
    each for a few hundred photographs at 256 x 640).
    """
    if settings.feature_model == "gaussian":
        gaussian = fit_position_gaussian(features)
        features.clear()
        return gaussian
    if settings.search_radius < 0:
        search: AnywhereSearch | NearbySearch = AnywhereSearch(
            feature_bank(features, settings.bank_vectors)
        )
    else:
        search = nearby_search(features, settings.search_radius)
    features.clear()
    return coreset(whitened(search) if settings.whiten else search, settings.coreset)
