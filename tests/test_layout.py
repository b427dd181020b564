"""MVTec folders are read in place: masks paired by name, odd files skipped, clear errors."""

import shutil
from pathlib import Path

import pytest
from PIL import Image

from ddad.data.layout import (
    TestImage,
    dataset_channels,
    dataset_size,
    list_categories,
    split_train_val,
    test_images,
    train_images,
    validate_category,
)
from ddad.errors import DdadError

CAT = "widget"


def _image(path: Path, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, (4, 4)).save(path)
    return path


def _category(root: Path, train=("a.png", "b.png"), good=("g.png",), defects=None) -> Path:
    """A small category: train/good, test/good, and test/<defect> with masks named alike."""
    for name in train:
        _image(root / CAT / "train" / "good" / name)
    for name in good:
        _image(root / CAT / "test" / "good" / name)
    for defect, names in (defects if defects is not None else {"crack": ["c.png"]}).items():
        for name in names:
            _image(root / CAT / "test" / defect / name)
            _image(root / CAT / "ground_truth" / defect / f"{Path(name).stem}_mask.png")
    return root / CAT


def test_masks_pair_by_name_not_by_sorted_order(tmp_path):
    category = _category(tmp_path, defects={"crack": ["1.png", "10.png", "2.jpg"]})
    masks = category / "ground_truth" / "crack"
    # Sorted, the masks run 10, 1, 2 ('0' < '_'): a zip of sorted lists would pair them wrongly.
    (masks / "2_mask.png").rename(masks / "2_mask.BMP")
    defective = [item for item in test_images(tmp_path, CAT) if item.label == 1]
    assert [(item.path.name, item.mask.name) for item in defective] == [
        ("1.png", "1_mask.png"),
        ("10.png", "10_mask.png"),
        ("2.jpg", "2_mask.BMP"),
    ]


def test_png_mask_wins_over_other_suffixes(tmp_path):
    category = _category(tmp_path)
    _image(category / "ground_truth" / "crack" / "c_mask.jpg")
    (item,) = [item for item in test_images(tmp_path, CAT) if item.label == 1]
    assert item.mask.name == "c_mask.png"


def test_a_defective_image_without_a_mask_is_kept_without_ground_truth(tmp_path):
    category = _category(tmp_path)
    _image(category / "test" / "crack" / "lonely.png")
    items = {item.key: item for item in test_images(tmp_path, CAT)}
    assert (items["crack/lonely"].mask, items["crack/lonely"].has_truth) == (None, False)
    assert items["crack/c"].has_truth and items["good/g"].has_truth
    validate_category(tmp_path, CAT)


def test_rejects_without_any_ground_truth_folder_are_a_valid_category(tmp_path):
    category = _category(tmp_path, defects={"defective": ["r1.png", "r2.png"]})
    shutil.rmtree(category / "ground_truth")
    validate_category(tmp_path, CAT)
    assert [item.has_truth for item in test_images(tmp_path, CAT)] == [False, False, True]


@pytest.mark.parametrize(
    "mask",
    [
        "crack/11_mask.png",  # its image was renamed or removed
        "crack/c.png",  # named like the image, not <stem>_mask
        "cracks/c_mask.png",  # the defect folder's name differs from test's
    ],
)
def test_a_mask_without_an_image_is_refused(tmp_path, mask):
    """A misnamed mask leaves its image without ground truth; said, not passed over."""
    category = _category(tmp_path)
    _image(category / "ground_truth" / mask)
    with pytest.raises(DdadError, match=r"^mask .* has no test image; a mask is named after"):
        test_images(tmp_path, CAT)


def test_labels_keys_order_and_good_masks(tmp_path):
    _category(
        tmp_path, good=("g2.png", "g1.png"), defects={"scratch": ["s.png"], "crack": ["c.png"]}
    )
    items = test_images(tmp_path, CAT)
    assert [item.key for item in items] == ["crack/c", "good/g1", "good/g2", "scratch/s"]
    assert [item.label for item in items] == [1, 0, 0, 1]
    assert [item.mask is None for item in items] == [False, True, True, False]
    assert isinstance(items[0], TestImage) and items[0].defect == "crack"


def test_stray_ground_truth_good_and_hidden_files_are_ignored(tmp_path):
    category = _category(tmp_path)
    _image(category / "ground_truth" / "good" / "g_mask.png")
    (category / "test" / "good" / "._g.png").write_bytes(b"\x00\x05AppleDouble")
    (category / "test" / ".ipynb_checkpoints").mkdir()
    (category / "test" / "readme.txt").write_text("notes")
    (category / "test" / "good" / "Thumbs.db").write_bytes(b"x")
    items = test_images(tmp_path, CAT)
    assert [(item.key, item.mask) for item in items if item.label == 0] == [("good/g", None)]
    assert [item.key for item in items] == ["crack/c", "good/g"]


def test_train_images_keep_images_only_sorted_any_suffix_case(tmp_path):
    category = _category(tmp_path, train=("b.png", "a.JPG", "c.tiff"))
    good = category / "train" / "good"
    (good / ".DS_Store").write_bytes(b"\x00")
    (good / "._a.png").write_bytes(b"\x00")
    (good / "Thumbs.db").write_bytes(b"\x00")
    (good / "notes.txt").write_text("x")
    (good / "more.png").mkdir()
    assert [path.name for path in train_images(tmp_path, CAT)] == ["a.JPG", "b.png", "c.tiff"]


def test_two_test_images_with_one_stem_are_refused(tmp_path):
    category = _category(tmp_path)
    _image(category / "test" / "crack" / "c.jpg")
    with pytest.raises(DdadError, match=r"crack holds two images named c \(c\.jpg, c\.png\)"):
        test_images(tmp_path, CAT)


def test_list_categories(tmp_path):
    _image(tmp_path / "bottle" / "train" / "good" / "a.png")
    (tmp_path / "anchor" / "test").mkdir(parents=True)
    (tmp_path / "docs").mkdir()
    (tmp_path / ".cache" / "train").mkdir(parents=True)
    (tmp_path / "readme.txt").write_text("x")
    assert list_categories(tmp_path) == ["anchor", "bottle"]
    with pytest.raises(DdadError, match=r"dataset folder .*nowhere does not exist"):
        list_categories(tmp_path / "nowhere")


def test_validate_accepts_a_complete_category_and_one_without_defects(tmp_path):
    _category(tmp_path)
    validate_category(tmp_path, CAT)
    _category(tmp_path / "plain", defects={})
    validate_category(tmp_path / "plain", CAT)


def test_validate_names_a_missing_category_and_the_ones_found(tmp_path):
    _category(tmp_path)
    with pytest.raises(DdadError, match=r"no category 'gadget' under .*; found: widget$"):
        validate_category(tmp_path, "gadget")


def test_validate_needs_train_images(tmp_path):
    category = _category(tmp_path, train=())
    with pytest.raises(DdadError, match=r"train/good is missing"):
        validate_category(tmp_path, CAT)
    (category / "train" / "good").mkdir(parents=True)
    (category / "train" / "good" / ".DS_Store").write_bytes(b"\x00")
    with pytest.raises(DdadError, match=r"train/good holds no images \(looked for \.png"):
        validate_category(tmp_path, CAT)


def test_good_parts_only_make_a_category_without_test_images(tmp_path):
    """A factory's first day: train/good alone, then an empty test/ folder, are both valid."""
    category = _category(tmp_path, good=(), defects={})
    validate_category(tmp_path, CAT)
    assert test_images(tmp_path, CAT) == []
    (category / "test" / "good").mkdir(parents=True)
    validate_category(tmp_path, CAT)
    assert test_images(tmp_path, CAT) == []


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _noisy(path: Path) -> Path:
    """A 64 px image of noise: it compresses badly, so cutting it loses pixel data."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.frombytes("L", (64, 64), bytes(range(256)) * 16).save(path)
    return path


@pytest.mark.parametrize(
    "broken, fix",
    [
        ("train/good/a.png", lambda p: p.write_bytes(b"")),
        ("test/good/g.png", _truncated),
        ("test/crack/c.jpg", _truncated),
        ("ground_truth/crack/c_mask.png", lambda p: p.write_bytes(b"not an image")),
    ],
)
def test_validate_names_a_file_that_does_not_read(tmp_path, broken, fix):
    """Where the data comes in, not in a later stage: one line naming the file and the fix."""
    category = _category(tmp_path, defects={"crack": ["c.jpg"]})
    for path in category.rglob("*.*"):
        _noisy(path)
    fix(category / broken)
    with pytest.raises(DdadError) as caught:
        validate_category(tmp_path, CAT)
    message = str(caught.value)
    assert str(category / broken) in message
    assert "\n" not in message
    assert message.endswith(
        (
            "copy it again or remove it",
            "export it again or remove it",
            "remove it or save it as PNG",
        )
    )


def test_validate_names_a_mask_not_at_its_images_size(tmp_path):
    category = _category(tmp_path)
    _image(category / "test" / "crack" / "unmasked.png")  # beside an image without a mask too
    Image.new("L", (5, 4)).save(category / "ground_truth" / "crack" / "c_mask.png")
    with pytest.raises(DdadError, match=r"c_mask\.png is 5x4 pixels but its image is 4x4"):
        validate_category(tmp_path, CAT)


def _paths(count: int) -> list[Path]:
    return [Path(f"{index:03d}.png") for index in range(count)]


def test_split_is_seeded_and_independent_of_input_order():
    paths = _paths(20)
    train, val = split_train_val(paths, 5, seed=1)
    assert (train, val) == split_train_val(list(reversed(paths)), 5, seed=1)
    assert len(val) == 5 and len(train) == 15
    assert sorted(train + val) == paths and train == sorted(train) and val == sorted(val)
    assert split_train_val(paths, 5, seed=2)[1] != val


def test_split_keeps_at_least_one_training_image():
    assert split_train_val(_paths(3), 10, seed=0)[0] != []
    assert len(split_train_val(_paths(3), 10, seed=0)[1]) == 2
    assert split_train_val([], 2, seed=0) == ([], [])
    assert split_train_val(_paths(3), 0, seed=0) == (_paths(3), [])
    with pytest.raises(ValueError, match="val_count"):
        split_train_val(_paths(3), -1, seed=0)


def test_dataset_size_is_the_size_most_training_images_have(tmp_path):
    """(height, width), from the headers; a tie goes to the first image by name."""
    good = tmp_path / CAT / "train" / "good"
    good.mkdir(parents=True)
    for name, size in [("a.png", (30, 20)), ("b.jpg", (40, 10)), ("c.png", (40, 10))]:
        Image.new("L", size).save(good / name)
    assert dataset_size(tmp_path, CAT) == (10, 40)
    (good / "c.png").unlink()
    assert dataset_size(tmp_path, CAT) == (20, 30)


def test_dataset_channels(tmp_path):
    category = _category(tmp_path)
    assert dataset_channels(tmp_path, CAT) == 1
    _image(category / "train" / "good" / "p.png", "P")
    assert dataset_channels(tmp_path, CAT) == 1  # the default palette is gray
    _image(category / "train" / "good" / "z.png", "RGB")
    assert dataset_channels(tmp_path, CAT) == 3
