"""Image and mask files to float arrays, and to the model's size (square, or a height and width).

Users point ddad at their own factory folders, so a file may be gray or colour, 8 or 16 bit,
palette or CMYK, turned by an EXIF tag, or simply broken. This module turns each file into a
plain array, or into a one-line DdadError that names the file and the problem.

Rules, so that every format lands on the same scale:

* pixels are float32 in [0, 1], shaped H x W x C with C = 1 (gray-like) or 3 (colour);
* 8-bit data is divided by 255; 16- and 32-bit integer data (I;16, I;16B, I) by 65535 and
  clipped; 32-bit float data (F) is clipped to [0, 1];
* alpha is dropped (not composited): LA reads as L, RGBA as RGB;
* a palette image reads as gray when every palette entry is gray, else as RGB; 1-bit reads
  as 0 or 1; CMYK and YCbCr are converted to RGB;
* the EXIF orientation is applied, so arrays (and the sizes masks must match) are as displayed;
* a multi-page TIFF reads as its first page;
* a mask pixel is a defect when its gray value is >= 128 (16-bit: >= 32768; float: >= 0.5).
  Masks need not be binary: a JPEG-compressed mask is read with the same rule.
* a file with more than MAX_PIXELS pixels is refused from its header, before decoding, so a
  decompression bomb never reaches memory; truncated files fail (they are never padded).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ddad.errors import DdadError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MAX_PIXELS = 90_000_000
RESIZE_METHODS = ("nearest", "box", "bilinear", "hamming", "bicubic", "lanczos")
MASK_RESIZE_METHODS = ("nearest", "bilinear_any")

_WIDE_SCALE = {mode: 65535.0 for mode in ("I;16", "I;16L", "I;16B", "I;16N", "I")} | {"F": 1.0}
_GRAY_MODES = frozenset({"1", "L", "LA", *_WIDE_SCALE})
_QUARTER_TURNS = frozenset({5, 6, 7, 8})  # EXIF orientations that swap width and height
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
# Mask resize rule -> (filter, smallest 0..255 level that counts as defect after resizing).
_MASK_RESIZE = {
    "nearest": (Image.Resampling.NEAREST, 128),
    "bilinear_any": (Image.Resampling.BILINEAR, 1),
}
_OPEN_LOCK = threading.Lock()
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError)
_VERIFIED_FORMATS = frozenset({"PNG"})  # Pillow's verify() reads their every chunk and its CRC

Size = int | Sequence[int]  # one side (square) or [height, width]


def sides(size: Size) -> tuple[int, int]:
    """(height, width) of a model size given as one side (a square) or as [height, width].

    Non-square photographs keep their shape only when both sides are given: a 1130 x 460 part
    squashed into a square loses its small defects along the long side first.
    """
    if isinstance(size, int):
        return size, size
    height, width = size
    return int(height), int(width)


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of IMAGE_SUFFIXES, in any letter case."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def read_image(
    path: Path, channels: int | None = None, max_pixels: int | None = None
) -> np.ndarray:
    """Read an image as float32 H x W x C in [0, 1] (module docstring: the rules per format).

    channels=None keeps the file's own count (1 gray-like, 3 colour); 3 repeats gray, 1 turns
    colour into luminance (ITU-R 601 weights, as PIL's L). max_pixels defaults to MAX_PIXELS.
    """
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, not {channels!r}")
    with _opened(path, "image", max_pixels) as lazy:
        pixels = _float_pixels(_decoded(lazy, path, "image"), path)
    if channels == 3 and pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1 and pixels.shape[2] == 3:
        return (pixels @ _LUMA)[..., None]
    return pixels


def native_channels(path: Path) -> int:
    """1 if the file is gray-like, 3 if colour, read from the header without decoding pixels."""
    with _opened(path, "image", None) as lazy:
        return 1 if _is_gray(lazy) else 3


def display_size(path: Path, kind: str = "image") -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation: the size read_mask wants."""
    with _opened(path, kind, None) as lazy:
        orientation = lazy.getexif().get(ExifTags.Base.Orientation, 1)
        return lazy.size[::-1] if orientation in _QUARTER_TURNS else lazy.size


def readable_size(path: Path, kind: str = "image") -> tuple[int, int]:
    """``display_size`` of a file checked to read through, where the data comes in: a broken
    file is then named by fetch_data, not by a stage minutes later.

    A PNG is verified (every chunk against its CRC, without decompressing: 0.7 ms for a
    1024 x 1024 photo against 15 ms to decode it); other formats, whose verify() checks
    nothing, are decoded (a 1024 x 1024 JPEG: 3 ms).
    """
    with _opened(path, kind, None) as lazy:
        try:
            if lazy.format in _VERIFIED_FORMATS:
                lazy.verify()
            else:
                lazy.load()
        except _DECODE_ERRORS as err:
            raise _corrupt(kind, path, err) from err
    return display_size(path, kind)  # a verified file is read again for its header


def check_mask_size(path: Path, mask_size: tuple[int, int], size: tuple[int, int]) -> None:
    """Refuse a mask whose (width, height) is not its image's ``size``: it would not say which
    pixels are defects."""
    if tuple(mask_size) != tuple(size):
        raise DdadError(
            f"mask {path} is {mask_size[0]}x{mask_size[1]} pixels but its image is "
            f"{size[0]}x{size[1]} (width x height); export the mask at the image's size"
        )


def read_mask(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Read a defect mask as bool H x W; `size` is its image's (width, height) as displayed."""
    with _opened(path, "mask", None) as lazy:
        mask = _decoded(lazy, path, "mask")
        check_mask_size(path, mask.size, size)
        if mask.mode == "F":
            return np.asarray(mask) >= 0.5
        if mask.mode in _WIDE_SCALE:
            return np.asarray(mask) >= 32768
        return np.asarray(_converted(mask, "L", path, "mask")) >= 128


def resize_image(img: np.ndarray, size: Size, method: str = "bicubic") -> np.ndarray:
    """Resize H x W x C float pixels to ``size`` (``sides``), channel by channel, clipped to
    [0, 1].

    PIL's filters widen with the scale factor, so shrinking is antialiased.
    """
    resample = Image.Resampling[_checked_method(method, RESIZE_METHODS).upper()]
    height, width = sides(size)
    planes = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32)).resize(
                (width, height), resample
            )
        )
        for c in range(img.shape[2])
    ]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def resize_mask(mask: np.ndarray, size: Size, method: str = "nearest") -> np.ndarray:
    """Resize a bool H x W mask to ``size`` (``sides``).

    "nearest" keeps the mask exact; "bilinear_any" is the seed's rule: a bilinear resize of the
    0/255 mask where any non-zero result counts as defect, so defect borders grow slightly.
    """
    resample, threshold = _MASK_RESIZE[_checked_method(method, MASK_RESIZE_METHODS)]
    levels = Image.fromarray(np.asarray(mask, dtype=np.uint8) * np.uint8(255))
    height, width = sides(size)
    return np.asarray(levels.resize((width, height), resample)) >= threshold


def resize_map(amap: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An anomaly map (H x W floats) bilinearly resized to ``shape`` (height, width): how a map
    made at the model's size is scored against ground truth at the photograph's own size."""
    height, width = shape
    plane = Image.fromarray(np.ascontiguousarray(amap, dtype=np.float32))
    return np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))


def _checked_method(method: str, allowed: tuple[str, ...]) -> str:
    if method not in allowed:
        raise DdadError(f"unknown resize method {method!r}; use one of: {', '.join(allowed)}")
    return method


@contextmanager
def _opened(path: Path, kind: str, max_pixels: int | None) -> Iterator[Image.Image]:
    """Open a file lazily (header only), after the checks a decoder would otherwise trip on.

    PIL's own size guard is a process-wide setting that warns at one limit and fails at twice
    it; it is switched off (under a lock) while the header is read, and the single exact limit
    `max_pixels` is checked instead, before any pixel is decoded.
    """
    limit = MAX_PIXELS if max_pixels is None else max_pixels
    try:
        if path.stat().st_size == 0:
            raise DdadError(f"{kind} {path} is empty (0 bytes); copy it again or remove it")
        with _OPEN_LOCK:
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                lazy = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as err:
        raise DdadError(
            f"{kind} {path} is not an image Pillow can read; remove it or save it as PNG"
        ) from err
    except OSError as err:
        raise DdadError(f"cannot read {kind} {path}: {err.strerror or err}") from err
    except (ValueError, SyntaxError, EOFError) as err:
        raise _corrupt(kind, path, err) from err
    with lazy:
        width, height = lazy.size
        if width * height > limit:
            raise DdadError(
                f"{kind} {path} is {width}x{height} = {width * height:,} pixels, more than "
                f"the limit of {limit:,}; if the file is genuine, raise "
                "ddad.data.imageio.MAX_PIXELS (or pass max_pixels)"
            )
        yield lazy


def _decoded(lazy: Image.Image, path: Path, kind: str) -> Image.Image:
    """Decode every pixel now, so that a truncated file fails here, and apply EXIF orientation."""
    try:
        lazy.load()
        return ImageOps.exif_transpose(lazy)
    except _DECODE_ERRORS as err:
        raise _corrupt(kind, path, err) from err


def _corrupt(kind: str, path: Path, err: Exception) -> DdadError:
    reason = " ".join(str(err).split())
    return DdadError(
        f"{kind} {path} is truncated or corrupt ({reason}); export it again or remove it"
    )


def _is_gray(image: Image.Image) -> bool:
    if image.mode not in ("P", "PA"):
        return image.mode in _GRAY_MODES
    # The palette is read with the header; unpack it via a 1-pixel image to stay header-only.
    rawmode, data = image.palette.getdata()
    probe = Image.new("P", (1, 1))
    probe.putpalette(data, rawmode)
    rgb = np.asarray(probe.getpalette("RGB"), dtype=np.uint8).reshape(-1, 3)
    return bool((rgb == rgb[:, :1]).all())


def _float_pixels(image: Image.Image, path: Path) -> np.ndarray:
    if image.mode in _WIDE_SCALE:
        wide = np.asarray(image, dtype=np.float32) / np.float32(_WIDE_SCALE[image.mode])
        return np.clip(wide, 0.0, 1.0)[..., None]
    eight_bit = np.asarray(_converted(image, "L" if _is_gray(image) else "RGB", path, "image"))
    scaled = eight_bit.astype(np.float32) / np.float32(255)
    return scaled.reshape(scaled.shape[0], scaled.shape[1], -1)


def _converted(image: Image.Image, mode: str, path: Path, kind: str) -> Image.Image:
    try:
        return image.convert(mode)
    except ValueError as err:
        raise DdadError(
            f"{kind} {path} has pixel mode {image.mode}, which ddad cannot read; "
            "save it as 8-bit gray or RGB"
        ) from err
