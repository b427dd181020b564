"""Every accepted pixel format lands on the same [0, 1] scale; broken files fail with one line."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from ddad.data import imageio
from ddad.data.imageio import (
    display_size,
    native_channels,
    read_image,
    read_mask,
    resize_image,
    resize_mask,
)
from ddad.errors import DdadError

RED = (255, 0, 0)
H, W = 6, 10  # not square, so a transposed read shows up in the shape


def _saved(image: Image.Image, path: Path, **options) -> Path:
    image.save(path, **options)
    return path


def _noise_rgb(size: int = 64) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (size, size, 3), np.uint8))


def _rgb(colour) -> Image.Image:
    return Image.new("RGB", (W, H), colour)


def _gray_palette() -> Image.Image:
    return Image.new("L", (W, H), 51).convert("P")


def _colour_palette() -> Image.Image:
    return _rgb(RED).convert("P", palette=Image.Palette.ADAPTIVE, colors=4)


def _wide(values: list[int], mode: str, dtype: str) -> Image.Image:
    row = np.resize(np.array(values, dtype=dtype), (H, W))
    return Image.frombytes(mode, (W, H), row.tobytes())


# name, image factory, file name, save options, expected channels, expected pixel [0, 0], tolerance
FORMATS = [
    ("L", lambda: Image.new("L", (W, H), 51), "a.png", {}, 1, [0.2], 1e-6),
    ("LA", lambda: Image.new("LA", (W, H), (200, 0)), "a.png", {}, 1, [200 / 255], 1e-6),
    ("RGB", lambda: _rgb((10, 200, 30)), "a.png", {}, 3, [10 / 255, 200 / 255, 30 / 255], 1e-6),
    ("RGBA", lambda: Image.new("RGBA", (W, H), (*RED, 0)), "a.png", {}, 3, [1, 0, 0], 0),
    ("P gray", _gray_palette, "a.png", {}, 1, [0.2], 1e-6),
    ("P colour", _colour_palette, "a.png", {}, 3, [1, 0, 0], 0),
    ("I;16", lambda: _wide([65535, 0], "I;16", "<u2"), "a.png", {}, 1, [1.0], 0),
    ("I;16 half", lambda: _wide([32768], "I;16", "<u2"), "a.png", {}, 1, [32768 / 65535], 1e-6),
    ("I;16B", lambda: _wide([65535, 0], "I;16B", ">u2"), "a.tif", {}, 1, [1.0], 0),
    ("I clipped", lambda: _wide([70000, -5], "I", "<i4"), "a.tif", {}, 1, [1.0], 0),
    ("F clipped", lambda: _wide([-0.5], "F", "<f4"), "a.tif", {}, 1, [0.0], 0),
    ("F inside", lambda: _wide([0.25], "F", "<f4"), "a.tif", {}, 1, [0.25], 0),
    ("1", lambda: Image.new("1", (W, H), 1), "a.png", {}, 1, [1.0], 0),
    (
        "CMYK jpeg",
        lambda: Image.new("CMYK", (W, H), (0, 255, 255, 0)),
        "a.jpg",
        {},
        3,
        [1, 0, 0],
        0.03,
    ),
    ("BMP", lambda: _rgb(RED), "a.bmp", {}, 3, [1, 0, 0], 0),
    ("TIFF", lambda: _rgb(RED), "a.tiff", {}, 3, [1, 0, 0], 0),
    (
        "JPG gray",
        lambda: Image.new("L", (W, H), 128),
        "a.JPG",
        {"quality": 95},
        1,
        [128 / 255],
        0.01,
    ),
]


@pytest.mark.parametrize(
    ("factory", "name", "options", "channels", "first", "tolerance"),
    [case[1:] for case in FORMATS],
    ids=[case[0] for case in FORMATS],
)
def test_every_accepted_mode_reads_as_float_in_unit_range(
    tmp_path, factory, name, options, channels, first, tolerance
):
    path = _saved(factory(), tmp_path / name, **options)
    pixels = read_image(path)
    assert pixels.shape == (H, W, channels)
    assert pixels.dtype == np.float32
    assert 0.0 <= pixels.min() and pixels.max() <= 1.0
    np.testing.assert_allclose(pixels[0, 0], first, atol=tolerance)
    assert native_channels(path) == channels


def test_a_wide_image_keeps_its_row_of_values(tmp_path):
    path = _saved(_wide([0, 65535], "I;16", "<u2"), tmp_path / "a.png")
    np.testing.assert_array_equal(read_image(path)[0, :4, 0], [0, 1, 0, 1])


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((8, 16), np.uint8)
    stored[:, :8] = 255  # left half white as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # display = stored turned 90 degrees clockwise
    path = _saved(Image.fromarray(stored), tmp_path / "turned.jpg", exif=exif, quality=95)
    pixels = read_image(path)[..., 0]
    assert pixels.shape == (16, 8)
    assert pixels[:8].mean() > 0.9 and pixels[8:].mean() < 0.1  # left half became the top
    assert display_size(path) == (8, 16)
    assert display_size(_saved(Image.fromarray(stored), tmp_path / "plain.png")) == (16, 8)


def test_channels_argument_repeats_gray_and_takes_luminance_of_colour(tmp_path):
    gray = _saved(Image.new("L", (W, H), 51), tmp_path / "g.png")
    red = _saved(_rgb(RED), tmp_path / "r.png")
    assert read_image(gray, channels=3).shape == (H, W, 3)
    np.testing.assert_allclose(read_image(gray, channels=3)[0, 0], [0.2, 0.2, 0.2], atol=1e-6)
    np.testing.assert_allclose(read_image(red, channels=1)[..., 0], 0.299, atol=1e-6)
    assert read_image(red, channels=3).shape == (H, W, 3)
    with pytest.raises(ValueError, match="channels"):
        read_image(red, channels=2)


def test_native_channels_reads_the_header_only(tmp_path):
    path = _saved(_noise_rgb(), tmp_path / "cut.png")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert native_channels(path) == 3
    with pytest.raises(DdadError):
        read_image(path)


def test_zero_byte_file_is_named(tmp_path):
    path = tmp_path / "empty.png"
    path.touch()
    with pytest.raises(DdadError, match=r"image .*empty\.png is empty \(0 bytes\)"):
        read_image(path)


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_truncated_file_fails_on_full_decode(tmp_path, name):
    path = _saved(_noise_rgb(), tmp_path / name)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DdadError, match=rf"image .*{name} is truncated or corrupt") as caught:
        read_image(path)
    assert "\n" not in str(caught.value)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_header_cut_inside_its_first_chunk_is_named(tmp_path):
    """Pillow raises ValueError, not OSError, while reading such a header."""
    path = tmp_path / "header.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x00IHDR")
    with pytest.raises(DdadError, match=r"image .*header\.png is truncated or corrupt"):
        read_image(path)


def test_text_file_named_png_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not pixels")
    with pytest.raises(DdadError, match=r"image .*notes\.png is not an image"):
        read_image(path)


def test_missing_file_is_named(tmp_path):
    with pytest.raises(DdadError, match=r"cannot read image .*gone\.png"):
        read_image(tmp_path / "gone.png")


def test_pixel_limit_stops_before_decoding_and_says_how_to_raise_it(tmp_path, monkeypatch):
    path = _saved(_rgb(RED), tmp_path / "big.png")
    message = r"image .*big\.png is 10x6 = 60 pixels, more than the limit of 59.*MAX_PIXELS"
    with pytest.raises(DdadError, match=message):
        read_image(path, max_pixels=59)
    assert read_image(path, max_pixels=60).shape == (H, W, 3)
    monkeypatch.setattr(imageio, "MAX_PIXELS", 59)
    with pytest.raises(DdadError, match="more than the limit of 59"):
        read_image(path)


def test_pils_own_guard_is_replaced_not_changed(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # PIL alone would refuse this image
    path = _saved(_rgb(RED), tmp_path / "a.png")
    assert read_image(path).shape == (H, W, 3)
    assert Image.MAX_IMAGE_PIXELS == 10


def test_unconvertible_mode_is_named(tmp_path):
    path = _saved(Image.new("LAB", (W, H)), tmp_path / "lab_mask.tif")
    with pytest.raises(DdadError, match=r"mask .*lab_mask\.tif has pixel mode LAB"):
        read_mask(path, (W, H))


def test_mask_threshold_is_128(tmp_path):
    levels = np.array([[0, 127, 128, 255]], np.uint8)
    path = _saved(Image.fromarray(levels), tmp_path / "m_mask.png")
    np.testing.assert_array_equal(read_mask(path, (4, 1)), [[False, False, True, True]])


def test_sixteen_bit_mask_threshold_is_half_range(tmp_path):
    path = _saved(_wide([0, 32767, 32768, 65535], "I;16", "<u2"), tmp_path / "m_mask.png")
    np.testing.assert_array_equal(read_mask(path, (W, H))[0, :4], [False, False, True, True])


@pytest.mark.parametrize("mode", ["1", "P", "RGB", "LA"])
def test_mask_in_any_mode_is_accepted(tmp_path, mode):
    levels = np.zeros((H, W), np.uint8)
    levels[2:4, 3:7] = 255
    path = _saved(Image.fromarray(levels).convert(mode), tmp_path / "m_mask.png")
    np.testing.assert_array_equal(read_mask(path, (W, H)), levels == 255)


def test_jpeg_mask_that_is_not_binary_is_read_with_the_threshold(tmp_path):
    levels = np.zeros((16, 16), np.uint8)
    levels[4:12, 4:12] = 255
    path = _saved(Image.fromarray(levels), tmp_path / "m_mask.jpg", quality=50)
    assert len(np.unique(np.asarray(Image.open(path)))) > 2
    np.testing.assert_array_equal(read_mask(path, (16, 16)), levels == 255)


def test_mask_of_another_size_names_mask_and_both_sizes(tmp_path):
    path = _saved(Image.new("L", (10, 8)), tmp_path / "007_mask.png")
    with pytest.raises(DdadError, match=r"mask .*007_mask\.png is 10x8 pixels .* image is 12x8"):
        read_mask(path, (12, 8))


def test_resize_image_is_square_float_and_clipped(tmp_path):
    edges = np.zeros((H, W, 3), np.float32)
    edges[:, ::2] = 1.0  # sharp stripes make bicubic overshoot
    resized = resize_image(edges, 32)
    assert resized.shape == (32, 32, 3) and resized.dtype == np.float32
    assert resized.min() == 0.0 and resized.max() == 1.0
    flat = resize_image(np.full((H, W, 1), 0.3, np.float32), 4, "lanczos")
    np.testing.assert_allclose(flat, 0.3, atol=1e-5)


def test_resize_keeps_a_height_and_width_apart():
    wide = np.zeros((46, 113, 1), np.float32)
    wide[:, 100:] = 1.0  # a stripe near the right edge stays near it
    resized = resize_image(wide, [16, 40], "nearest")
    assert resized.shape == (16, 40, 1)
    assert resized[:, 36:].min() == 1.0 and resized[:, :34].max() == 0.0
    assert resize_mask(wide[..., 0] > 0, (16, 40)).shape == (16, 40)


def test_resize_methods_are_checked():
    with pytest.raises(DdadError, match="unknown resize method 'cubic'; use one of: nearest"):
        resize_image(np.zeros((2, 2, 1), np.float32), 4, "cubic")
    with pytest.raises(DdadError, match="bilinear_any"):
        resize_mask(np.zeros((2, 2), bool), 4, "bilinear")


def test_nearest_mask_resize_is_exact_and_bilinear_any_grows():
    mask = np.zeros((4, 4), bool)
    mask[1, 1] = True
    nearest = resize_mask(mask, 8)
    grown = resize_mask(mask, 8, "bilinear_any")
    assert nearest.dtype == bool and nearest.shape == (8, 8)
    np.testing.assert_array_equal(np.argwhere(nearest), [[2, 2], [2, 3], [3, 2], [3, 3]])
    assert grown.sum() > nearest.sum() and grown[nearest].all()


def test_shrinking_a_thin_line_nearest_may_drop_it_bilinear_any_keeps_it():
    mask = np.zeros((16, 16), bool)
    mask[:, 5] = True
    assert not resize_mask(mask, 4).any()
    assert resize_mask(mask, 4, "bilinear_any")[:, 1].all()
