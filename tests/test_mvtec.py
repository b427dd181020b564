import shutil
from pathlib import Path

import pytest
from http_server import FileServer, unreachable_url
from mvtec_archive import CATEGORIES, category_files, make_mvtec_archive
from PIL import Image

from ddad.data.download import sha256_file
from ddad.data.mvtec import MVTEC_CATEGORIES, MVTEC_SHA256, MVTEC_URL, archive_path, fetch_category
from ddad.errors import DdadError

NAME = "/mvtec_anomaly_detection.tar.xz"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return make_mvtec_archive(tmp_path_factory.mktemp("mvtec") / NAME[1:], train=3)


@pytest.fixture
def server(archive):
    with FileServer({NAME: archive.read_bytes()}) as running:
        yield running


def fetch(category: str, root: Path, url: str, **kwargs) -> str:
    return fetch_category(
        category, root / category, downloads=root / "downloads", url=url, progress=False, **kwargs
    )


def test_categories_split_into_objects_and_textures():
    kinds = list(MVTEC_CATEGORIES.values())
    assert (kinds.count("object"), kinds.count("texture")) == (10, 5)
    assert MVTEC_CATEGORIES["metal_nut"] == "object"
    assert MVTEC_CATEGORIES["grid"] == "texture"


def test_the_archive_is_downloaded_once_and_each_category_extracted_alone(server, tmp_path):
    fetch("bottle", tmp_path, server.url(NAME))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bottle", "downloads"]
    files = sorted(p.relative_to(tmp_path / "bottle").as_posix() for p in tmp_path.rglob("*.png"))
    assert files == sorted(category_files("bottle", 3))
    fetch("screw", tmp_path, server.url(NAME))
    assert [r.path for r in server.requests] == [NAME]
    for category, (size, mode) in CATEGORIES.items():
        with Image.open(tmp_path / category / "train/good/000.png") as image:
            assert (image.size, image.mode) == ((size, size), mode)


def test_fetch_replaces_what_the_category_folder_held(server, tmp_path):
    stale = tmp_path / "bottle" / "train" / "good" / "stale.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    fetch("bottle", tmp_path, server.url(NAME))
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_an_archive_put_in_place_needs_no_network(archive, tmp_path):
    placed = archive_path(unreachable_url(NAME), tmp_path / "downloads")
    placed.parent.mkdir()
    shutil.copy(archive, placed)
    digest = fetch("screw", tmp_path, unreachable_url(NAME), sha256=sha256_file(archive))
    assert digest == sha256_file(archive)
    assert (tmp_path / "screw" / "ground_truth" / "broken" / "000_mask.png").is_file()


def test_the_built_in_url_is_always_checked_against_the_known_checksum(archive, tmp_path):
    placed = archive_path(MVTEC_URL, tmp_path / "downloads")
    assert placed.name == "mvtec_anomaly_detection.tar.xz"
    placed.parent.mkdir()
    shutil.copy(archive, placed)
    with pytest.raises(DdadError, match=f"expected {MVTEC_SHA256}"):
        fetch("bottle", tmp_path, MVTEC_URL, sha256=sha256_file(archive))
    assert not (tmp_path / "bottle").exists()


def test_a_wrong_pin_extracts_nothing(server, tmp_path):
    with pytest.raises(DdadError, match="expected " + "0" * 64):
        fetch("bottle", tmp_path, server.url(NAME), sha256="0" * 64)
    assert not (tmp_path / "bottle").exists()


def test_an_archive_without_the_category_is_refused_and_leaves_nothing(server, tmp_path):
    server.files["/other.tar.xz"] = server.files.pop(NAME)
    with pytest.raises(DdadError, match="no top-level 'carpet/' folder"):
        fetch("carpet", tmp_path, server.url("/other.tar.xz"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_unknown_category_lists_valid_ones(tmp_path):
    with pytest.raises(DdadError) as caught:
        fetch("nope", tmp_path, MVTEC_URL)
    assert all(name in str(caught.value) for name in MVTEC_CATEGORIES)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_archive_ends_with_the_hint(server, tmp_path):
    with pytest.raises(DdadError) as caught:
        fetch("bottle", tmp_path, server.url("/moved.tar.xz"), hint="Get it elsewhere.")
    assert str(caught.value) == (
        f"cannot download {server.url('/moved.tar.xz')}: HTTP 404 Not Found. Get it elsewhere."
    )
