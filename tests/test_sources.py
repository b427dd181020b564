"""Whose features describe a patch: the UNet's partial pass (its shapes, and that it leaves
the model as it found it), and which sources need the trained UNet."""

import pytest
import torch
import torch.nn.functional as F
from tiny_model import stripes

from ddad.diffusion.models import build_model
from ddad.maps.scoring import ScoreSettings
from ddad.maps.sources import FEATURE_BLOCKS, Cost, feature_source, reads_unet, unet_features


def test_features_have_half_the_image_size(tiny_unet):
    features = unet_features(tiny_unet, stripes(2))
    assert features.shape[0] == 2 and features.shape[-2:] == (8, 8)


def test_no_blocks_is_refused(tiny_unet):
    with pytest.raises(ValueError, match="at least one block"):
        unet_features(tiny_unet, stripes(1), blocks=())


def test_features_are_what_the_whole_unet_computes_at_t_zero_at_the_chosen_blocks():
    """The pass stops after the last chosen block, so it must agree with a full pass there;
    every weight is drawn at random, as an initialised UNet's zeroed layers hide the timestep."""
    torch.manual_seed(1)
    model = build_model("tiny", 1, 16).eval()
    for parameter in model.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    images = stripes(2)
    outputs = {}
    hooks = [
        model.input_blocks[b].register_forward_hook(
            lambda _block, _inputs, output, b=b: outputs.__setitem__(b, output)
        )
        for b in FEATURE_BLOCKS
    ]
    with torch.no_grad():
        model(images, torch.zeros(2, dtype=torch.long))
    for hook in hooks:
        hook.remove()
    pooled = [F.avg_pool2d(outputs[b], 3, 1, 1) for b in FEATURE_BLOCKS]
    expected = torch.cat([F.interpolate(p, size=(8, 8), mode="bilinear") for p in pooled], 1)
    torch.testing.assert_close(unet_features(model, images), expected)


def test_only_the_unets_source_needs_the_unet_and_its_passes_are_unet_passes(tiny_unet):
    cpu = torch.device("cpu")
    unet = ScoreSettings(backbone="unet")
    assert reads_unet(unet) and not reads_unet(ScoreSettings())
    with pytest.raises(ValueError, match="pass it"):
        feature_source(unet, cpu)
    assert feature_source(unet, cpu, tiny_unet).cost(2) == Cost(unet_passes=2)
    assert feature_source(ScoreSettings(), cpu).cost(2) == Cost(backbone_passes=2)
