"""Validation crops: the size training sees, the same every time, whole images when uncropped."""

import torch

from ddad.diffusion.train import validation_crops


def test_crops_are_fixed_training_sized_pieces_of_each_image() -> None:
    images = torch.arange(2 * 3 * 40 * 90, dtype=torch.float32).reshape(2, 3, 40, 90)
    crops = validation_crops(images, crop=16, seed=5, per_image=3)
    assert crops.shape == (6, 3, 16, 16)
    assert torch.equal(crops, validation_crops(images, crop=16, seed=5, per_image=3))
    for index, crop in enumerate(crops):
        source = images[index % 2]
        top = int((crop[0, 0, 0] - source[0, 0, 0]) // 90)
        left = int((crop[0, 0, 0] - source[0, 0, 0]) % 90)
        assert torch.equal(crop, source[:, top : top + 16, left : left + 16])


def test_no_crop_or_a_crop_as_large_as_a_side_keeps_the_whole_images() -> None:
    images = torch.zeros(2, 1, 32, 64)
    assert validation_crops(images, crop=0) is images
    assert validation_crops(images, crop=32) is images
