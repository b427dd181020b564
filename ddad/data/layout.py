"""Which files of an MVTec-layout dataset are training images, test images and masks.

    <root>/<category>/train/good/*                             defect-free training images
    <root>/<category>/test/good/*                              defect-free test images (label 0)
    <root>/<category>/test/<defect>/*                          defective test images (label 1)
    <root>/<category>/ground_truth/<defect>/<stem>_mask.png    a defective image's mask, if drawn

Only train/good is needed: a factory starts with good parts alone, so a category without test/
(or with an empty one) trains and learns its detect threshold, with nothing to measure yet.

The folders are read in place and never written. Masks are paired with images by name, never
by list order, and may have any image suffix (a .png mask wins if there are several). A
defective image without a mask counts for the image figures alone (``TestImage.has_truth``);
a mask without an image stops with an error, as it is a misnamed mask whose image would
silently lose its ground truth. Hidden files (names starting with a dot, such as macOS
"._x.png"), files without an image suffix (Thumbs.db, notes) and ground_truth/good are skipped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddad.data.imageio import (
    IMAGE_SUFFIXES,
    check_mask_size,
    display_size,
    is_image_file,
    native_channels,
    readable_size,
)
from ddad.errors import DdadError

GOOD = "good"
MASK_SUFFIX = "_mask"
GROUND_TRUTH = "ground_truth"  # <category>/ground_truth/<defect>/<stem>_mask.png
_LAYOUT_HINT = "see the layout <category>/train/good, <category>/test/<good|defect>"
# where the pipeline keeps each category's images and what it makes of them (dvc.yaml's
# outputs, relative to the repository root), for the stages, `ddad detect` and `ddad bench`
DATA_DIR = Path("data/images")  # fetch_data@<category> fills data/images/<category>
PRETRAINED_DIR = Path("models/pretrained")
TRAINED_DIR = Path("models/trained")
DETECTORS_DIR = Path("models/detectors")  # detector@<category>: what ddad detect carries
DENOISERS_DIR = Path("models/denoisers")  # denoiser@<category>: the feature denoiser
RUNS_DIR = Path("runs")
METRICS_DIR = Path("metrics")
PLOTS_DIR = Path("plots")


@dataclass(frozen=True)
class TestImage:
    """One test image: label 0 (good) or 1 (defective), its test folder name, its mask if any."""

    __test__ = False  # a data class, not a pytest test class

    path: Path
    label: int
    defect: str
    mask: Path | None

    @property
    def key(self) -> str:
        """'<defect>/<stem>': names the image uniquely within its category."""
        return f"{self.defect}/{self.path.stem}"

    @property
    def has_truth(self) -> bool:
        """Whether its ground truth is known: a good image's is all defect-free, a defective
        image's is its mask, so a defective image without one has none (no pixel figure)."""
        return self.label == 0 or self.mask is not None


def list_categories(root: Path) -> list[str]:
    """Sorted names of the folders under `root` that hold a train/ or test/ folder."""
    if not root.is_dir():
        raise DdadError(
            f"dataset folder {root} does not exist; point it at the folder that holds one "
            "folder per category"
        )
    return [
        folder.name
        for folder in _subfolders(root)
        if (folder / "train").is_dir() or (folder / "test").is_dir()
    ]


def train_images(root: Path, category: str) -> list[Path]:
    """Sorted image files of <category>/train/good."""
    return _image_files(
        root / category / "train" / GOOD, "put the defect-free training images there"
    )


def test_images(root: Path, category: str) -> list[TestImage]:
    """Every test image of a category, sorted by (defect, stem); defects paired with their masks
    where they have one; none without a test/ folder. A mask that pairs with no test image is
    refused."""
    test_folder = root / category / "test"
    found: list[TestImage] = []
    for folder in _subfolders(test_folder) if test_folder.exists() else []:
        images = _image_files(folder)
        _check_unique_stems(folder, images)
        if folder.name == GOOD:
            found += [TestImage(path, 0, GOOD, None) for path in images]
            continue
        masks = _masks_by_stem(root / category / GROUND_TRUTH / folder.name)
        found += [TestImage(path, 1, folder.name, masks.get(path.stem)) for path in images]
    _check_masks_have_images(root / category, found)
    return sorted(found, key=lambda item: (item.defect, item.path.stem))


test_images.__test__ = False  # a library function; keeps pytest from collecting it on import


def validate_category(root: Path, category: str) -> None:
    """Stop with one line if a category cannot be used: missing folders, no images, a mask
    without an image, a file that does not read or a mask not at its image's size.

    A category without test images, or without defective (or good) ones, is allowed: the
    figures no image can give then come out as nan.
    """
    found = list_categories(root)
    if category not in found:
        raise DdadError(
            f"no category {category!r} under {root} (a category is a folder with train/ or "
            f"test/ inside); found: {', '.join(found) or 'none'}"
        )
    _check_files(_nonempty_train_images(root, category), test_images(root, category))


def _check_files(train: list[Path], tests: list[TestImage]) -> None:
    """Every image and mask reads (``readable_size``) and each mask fits its image: checked
    where the data comes in, so that a broken file stops fetch_data, not a later stage."""
    for path in train:
        readable_size(path)
    for item in tests:
        size = readable_size(item.path)
        if item.mask is not None:
            check_mask_size(item.mask, readable_size(item.mask, "mask"), size)


def split_train_val(
    paths: Sequence[Path], val_count: int, seed: int
) -> tuple[list[Path], list[Path]]:
    """Hold out `val_count` images, chosen by `seed` alone: the input order does not matter.

    At least one image always stays for training. Both lists come back sorted.
    """
    if val_count < 0:
        raise ValueError(f"val_count must be >= 0, not {val_count}")
    ordered = sorted(paths)
    held_count = min(val_count, max(len(ordered) - 1, 0))
    held = set(np.random.default_rng(seed).permutation(len(ordered))[:held_count].tolist())
    train = [path for index, path in enumerate(ordered) if index not in held]
    val = [path for index, path in enumerate(ordered) if index in held]
    return train, val


def dataset_channels(root: Path, category: str) -> int:
    """1 if every training image is gray-like, else 3 (read from the file headers only)."""
    images = _nonempty_train_images(root, category)
    return 1 if all(native_channels(path) == 1 for path in images) else 3


def dataset_size(root: Path, category: str) -> tuple[int, int]:
    """(height, width) that most training images have (a tie: the first by name), read from the
    file headers only: the photographs' own size, which ``data.image_size: auto`` follows."""
    sizes = Counter(display_size(path)[::-1] for path in _nonempty_train_images(root, category))
    return sizes.most_common(1)[0][0]


def _nonempty_train_images(root: Path, category: str) -> list[Path]:
    images = train_images(root, category)
    if not images:
        raise DdadError(
            f"{root / category / 'train' / GOOD} holds no images (looked for "
            f"{', '.join(IMAGE_SUFFIXES)}); put the defect-free training images there"
        )
    return images


def _subfolders(folder: Path, hint: str = _LAYOUT_HINT) -> list[Path]:
    return sorted(path for path in _entries(folder, hint) if path.is_dir())


def _image_files(folder: Path, hint: str = _LAYOUT_HINT) -> list[Path]:
    return sorted(path for path in _entries(folder, hint) if path.is_file() and is_image_file(path))


def _entries(folder: Path, hint: str) -> list[Path]:
    """Visible entries of a folder that must exist; `hint` says how to fix a missing one."""
    try:
        return [path for path in folder.iterdir() if not path.name.startswith(".")]
    except FileNotFoundError as err:
        raise DdadError(f"folder {folder} is missing; {hint}") from err
    except OSError as err:
        raise DdadError(f"cannot list folder {folder}: {err.strerror or err}") from err


def _check_unique_stems(folder: Path, images: list[Path]) -> None:
    seen: dict[str, Path] = {}
    for path in images:
        if path.stem in seen:
            raise DdadError(
                f"{folder} holds two images named {path.stem} ({seen[path.stem].name}, "
                f"{path.name}); keep one so that each test image has its own name"
            )
        seen[path.stem] = path


def _masks_by_stem(mask_folder: Path) -> dict[str, Path]:
    """Image stem -> mask file, from <stem>_mask.<suffix>; a missing folder holds no masks."""
    if not mask_folder.is_dir():
        return {}
    candidates = sorted(
        _image_files(mask_folder), key=lambda path: (path.suffix.lower() != ".png", path.name)
    )
    masks: dict[str, Path] = {}
    for path in candidates:
        if path.stem.endswith(MASK_SUFFIX):
            masks.setdefault(path.stem.removesuffix(MASK_SUFFIX), path)
    return masks


def _check_masks_have_images(category_folder: Path, tests: list[TestImage]) -> None:
    """Refuse a file in ground_truth/<defect> (good apart) that is no <stem>_mask.* of an image
    in test/<defect>: a misnamed mask would leave its image without ground truth, unseen."""
    ground_truth = category_folder / GROUND_TRUTH
    if not ground_truth.is_dir():
        return
    wanted = {(item.defect, item.path.stem + MASK_SUFFIX) for item in tests}
    for folder in _subfolders(ground_truth):
        masks = _image_files(folder) if folder.name != GOOD else []
        for path in masks:
            if (folder.name, path.stem) not in wanted:
                raise DdadError(
                    f"mask {path} has no test image; a mask is named after its image, "
                    f"test/{folder.name}/<stem>.png -> ground_truth/{folder.name}/<stem>"
                    f"{MASK_SUFFIX}.png (rename or remove it)"
                )
