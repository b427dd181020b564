"""DDAD's map: nothing where the reconstruction gave the input back, the most where it changed
it, and the feature distance weighted as asked."""

import numpy as np
import pytest
import torch

from ddad.diffusion.models import build_model
from ddad.maps.kinds.ddad_comparison import compared_map
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import feature_source


@pytest.fixture(scope="module", params=["unet", "efficientnet-lite0"])
def source(request):
    settings = ScoreSettings(backbone=request.param)
    return feature_source(settings, torch.device("cpu"), build_model("tiny", 1, 32))


def _image() -> np.ndarray:
    rows = np.sin(np.arange(32) / 2.0).astype(np.float32)
    return np.broadcast_to(rows[None, :, None], (1, 32, 32)).copy()


def test_an_unchanged_reconstruction_scores_zero_everywhere(source):
    image = _image()
    amap = compared_map(source, image, np.stack([image, image]), ScoreSettings())
    assert amap.shape == (32, 32)
    np.testing.assert_allclose(amap, 0, atol=1e-5)


def test_what_the_reconstruction_changed_lights_up(source):
    image = _image()
    repaired = image.copy()
    image[0, 4:10, 20:26] = 1.0  # the defect the reconstruction took away
    amap = compared_map(source, image, repaired[None], ScoreSettings())
    peak = np.unravel_index(np.argmax(amap), amap.shape)
    assert 2 <= peak[0] < 12 and 18 <= peak[1] < 28
    pixels_only = compared_map(source, image, repaired[None], ScoreSettings(feature_weight=0.0))
    assert (amap >= pixels_only - 1e-9).all() and amap.sum() > pixels_only.sum()
