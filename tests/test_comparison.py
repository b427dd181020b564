"""DDAD's map: nothing where the reconstruction gave the input back, the most where it changed
it, the pixel difference plus the feature distance weighted as asked, and the mean over several
reconstructions."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

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


def test_the_feature_term_is_one_minus_the_cosine_similarity_weighted_as_asked(source):
    """Unblurred, the map is the mean absolute pixel difference plus ``feature_weight`` times
    one minus the cosine similarity of the input's and the reconstruction's features, resized
    bilinearly to the image."""
    image, repaired = _image(), _image()
    image[0, 4:10, 20:26] = 1.0
    unblurred = ScoreSettings(sigma=0)
    pixels = compared_map(source, image, repaired[None], replace(unblurred, feature_weight=0.0))
    np.testing.assert_allclose(pixels, np.abs(image - repaired)[0], atol=1e-6)
    features = source([image, repaired]).double()
    cosine = F.cosine_similarity(features[1], features[0], dim=0)
    distance = F.interpolate((1 - cosine)[None, None], size=(32, 32), mode="bilinear")[0, 0]
    assert distance.max() > 0.01  # the spot changed the features
    for weight in (1.0, 2.5):
        weighted = replace(unblurred, feature_weight=weight)
        amap = compared_map(source, image, repaired[None], weighted)
        np.testing.assert_allclose(amap - pixels, weight * distance.numpy(), atol=1e-5)


def test_several_reconstructions_give_the_mean_of_their_maps(source):
    image, repaired = _image(), _image()
    image[0, 4:10, 20:26] = 1.0
    one = compared_map(source, image, repaired[None], ScoreSettings())
    both = compared_map(source, image, np.stack([repaired, image]), ScoreSettings())
    np.testing.assert_allclose(both, one / 2, atol=1e-6)
