"""Random inputs never crash the readers, metrics and scores: a value in range or a named error."""

import io
import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from ddad.data.imageio import read_image
from ddad.errors import DdadError
from ddad.evaluation import metrics
from ddad.maps.kinds.reconstruction_error import anomaly_map
from ddad.maps.scoring import ScoreSettings, finished

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SETTINGS = settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
sides = st.integers(1, 24)


@st.composite
def pil_images(draw) -> tuple[Image.Image, int]:
    """A random image in one of the common modes, and the channel count it should read as."""
    mode = draw(st.sampled_from(["L", "RGB", "RGBA", "P", "I;16"]))
    h, w = draw(sides), draw(sides)
    if mode == "I;16":
        values = draw(arrays(np.uint16, (h, w)))
        return Image.fromarray(values.astype("<u2")).convert("I;16"), 1
    bands = {"L": 1, "RGB": 3, "RGBA": 4, "P": 1}[mode]
    values = draw(arrays(np.uint8, (h, w, bands)))
    if mode != "P":
        return Image.fromarray(values.squeeze(-1) if bands == 1 else values, mode), min(bands, 3)
    image = Image.fromarray(values[..., 0], "P")
    gray = draw(st.booleans())
    palette = np.repeat(np.arange(256, dtype=np.uint8), 3) if gray else draw(arrays(np.uint8, 768))
    if not gray:
        palette[:3] = (255, 0, 0)  # at least one colour entry
    image.putpalette(palette.tobytes())
    return image, 1 if gray else 3


@SETTINGS
@given(pil_images(), st.sampled_from([None, 1, 3]))
def test_any_saved_image_reads_into_0_1(tmp_path, image_and_channels, channels):
    image, native = image_and_channels
    path = tmp_path / "image.png"
    image.save(path)
    pixels = read_image(path, channels)
    assert pixels.dtype == np.float32
    assert pixels.shape == (image.height, image.width, channels or native)
    assert pixels.min() >= 0 and pixels.max() <= 1


def _png_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png_bytes()
broken_files = st.one_of(
    st.binary(max_size=256),
    st.integers(0, len(PNG) - 1).map(lambda end: PNG[:end]),
    st.tuples(st.integers(0, len(PNG) - 1), st.integers(0, 255)).map(
        lambda flip: PNG[: flip[0]] + bytes([flip[1]]) + PNG[flip[0] + 1 :]
    ),
)


@SETTINGS
@given(broken_files)
def test_random_bytes_as_png_read_or_raise_ddad_error(tmp_path, content):
    path = tmp_path / "broken.png"
    path.write_bytes(content)
    try:
        pixels = read_image(path)
    except DdadError as err:
        assert str(path) in str(err) and "\n" not in str(err)
        return
    assert pixels.min() >= 0 and pixels.max() <= 1


@st.composite
def masks_and_maps(draw) -> tuple[np.ndarray, np.ndarray]:
    n, h, w = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from([np.uint8, np.int64, bool]))
    slip = dtype is not bool and draw(st.booleans())  # a 0/255 mask, a common mistake
    mask_values = st.sampled_from([0, 1, 255] if slip else [0, 1])
    masks = draw(arrays(dtype, (n, h, w), elements=mask_values))
    scores = st.floats(allow_nan=draw(st.booleans()), allow_infinity=False, width=32)
    maps = draw(arrays(np.float32, (n, h, w), elements=scores))
    return masks, maps


def _in_unit_or_nan(value: float) -> bool:
    return isinstance(value, float) and (math.isnan(value) or 0 <= value <= 1)


@SETTINGS
@given(masks_and_maps())
def test_pixel_metrics_raise_value_error_or_give_0_1_or_nan(masks_and_maps):
    masks, maps = masks_and_maps
    for metric in (metrics.pixel_auroc, metrics.aupro, metrics.pixel_ap):
        try:
            value = metric(masks, maps)
        except ValueError:
            continue
        assert _in_unit_or_nan(value), (metric.__name__, value)


@SETTINGS
@given(
    st.lists(st.sampled_from([0, 1, 2]), min_size=0, max_size=12).flatmap(
        lambda labels: st.tuples(
            st.just(labels),
            st.lists(st.floats(allow_infinity=True), min_size=len(labels), max_size=len(labels)),
        )
    )
)
def test_image_metrics_raise_value_error_or_give_0_1_or_nan(labels_and_scores):
    labels, scores = labels_and_scores
    for metric in (metrics.image_auroc, metrics.f1_max):
        try:
            value = metric(labels, scores)
        except ValueError:
            continue
        assert _in_unit_or_nan(value), (metric.__name__, value)


@st.composite
def reconstructions(draw) -> tuple[np.ndarray, np.ndarray]:
    c, h, w, e = draw(st.sampled_from([1, 3])), draw(sides), draw(sides), draw(st.integers(1, 3))
    values = st.floats(-1, 1, width=32)
    image = draw(arrays(np.float32, (c, h, w), elements=values))
    return image, draw(arrays(np.float32, (e, c, h, w), elements=values))


@SETTINGS
@given(
    reconstructions(),
    st.floats(0, 5),
    st.sampled_from([0, 1, 3, 7, 15]),
    st.sampled_from(["squared", "absolute"]),
    st.sampled_from(["max", "topk_mean", "spots"]),
    st.floats(0, 1),
    st.sampled_from([0, 1, 3]),
)
def test_maps_and_scores_are_finite_and_non_negative(
    pair, sigma, size, error, kind, fraction, closing
):
    image, recons = pair
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amap = anomaly_map(torch.from_numpy(image), torch.from_numpy(recons), sigma, size, error)
    assert amap.shape == image.shape[1:]
    assert torch.isfinite(amap).all() and (amap >= 0).all()
    settings = ScoreSettings(image_score=kind, top_fraction=fraction, closing=closing)
    final, score = finished(amap.numpy(), settings)
    assert (final >= amap.numpy()).all() and final.max() == amap.max()
    assert math.isfinite(score) and score >= 0
    assert score <= float(amap.max()) + 1e-12
