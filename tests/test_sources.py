"""Whose features describe a patch: the UNet's partial pass (its shapes, and that it leaves
the model as it found it), and which sources need the trained UNet."""

import pytest
import torch

from ddad.diffusion.models import build_model
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import Cost, feature_source, reads_unet, unet_features


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("tiny", 1, 16).eval()


def _stripes(count: int) -> torch.Tensor:
    rows = torch.arange(16).float()
    image = torch.sin(rows / 2).view(1, 1, 16, 1).expand(count, 1, 16, 16)
    return image.clone()


def test_features_have_half_the_image_size(model):
    features = unet_features(model, _stripes(2))
    assert features.shape[0] == 2 and features.shape[-2:] == (8, 8)


def test_no_blocks_is_refused(model):
    with pytest.raises(ValueError, match="at least one block"):
        unet_features(model, _stripes(1), blocks=())


def test_the_model_keeps_no_hooks(model):
    unet_features(model, _stripes(1))
    assert all(not block._forward_hooks for block in model.input_blocks)


def test_only_the_unets_source_needs_the_unet_and_its_passes_are_unet_passes(model):
    cpu = torch.device("cpu")
    unet = ScoreSettings(backbone="unet")
    assert reads_unet(unet) and not reads_unet(ScoreSettings())
    with pytest.raises(ValueError, match="pass it"):
        feature_source(unet, cpu)
    assert feature_source(unet, cpu, model).cost(2) == Cost(unet_passes=2)
    assert feature_source(ScoreSettings(), cpu).cost(2) == Cost(backbone_passes=2)
