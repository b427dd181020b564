import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from http_server import FileServer, unreachable_url

from ddad.errors import DdadError
from ddad.mvtec import MVTEC_CATEGORIES, fetch_mvtec

LAYOUT = [
    "train/good/000.png",
    "test/good/000.png",
    "test/crack/000.png",
    "ground_truth/crack/000_mask.png",
]
TEMPLATE_PATH = "/{category}.tar.xz"


def category_archive(category: str, top: str | None = None) -> bytes:
    """A tiny tar.xz shaped like MVTec's: `<category>/...` plus a licence file beside it."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:xz") as tar:
        for name in ["license.txt", *(f"{top or category}/{path}" for path in LAYOUT)]:
            data = f"{category}:{name}".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def fetch(server: FileServer, categories: list[str], root: Path, **kwargs) -> None:
    fetch_mvtec(categories, root, url_template=server.url(TEMPLATE_PATH), progress=False, **kwargs)


@pytest.fixture
def server():
    files = {f"/{name}.tar.xz": category_archive(name) for name in ["bottle", "carpet"]}
    with FileServer(files) as running:
        yield running


def test_categories_split_into_objects_and_textures():
    kinds = list(MVTEC_CATEGORIES.values())
    assert (kinds.count("object"), kinds.count("texture")) == (10, 5)
    assert MVTEC_CATEGORIES["metal_nut"] == "object"
    assert MVTEC_CATEGORIES["grid"] == "texture"


def test_fetch_installs_each_category_and_verifies_pins(server, tmp_path):
    pin = hashlib.sha256(server.files["/bottle.tar.xz"]).hexdigest()
    root = tmp_path / "mvtec"
    fetch(server, ["bottle", "carpet"], root, sha256={"bottle": pin})
    assert sorted(p.name for p in root.iterdir()) == [".downloads", "bottle", "carpet"]
    for category in ["bottle", "carpet"]:
        files = sorted(
            p.relative_to(root / category).as_posix() for p in root.glob(f"{category}/**/*.png")
        )
        assert files == sorted(LAYOUT)
    mask = root / "carpet/ground_truth/crack/000_mask.png"
    assert mask.read_text() == "carpet:carpet/ground_truth/crack/000_mask.png"


def test_complete_categories_are_skipped_without_network(server, tmp_path):
    root = tmp_path / "mvtec"
    fetch(server, ["bottle"], root)
    (root / ".downloads/bottle.tar.xz").unlink()
    fetch(server, ["bottle"], root)
    assert [r.path for r in server.requests] == ["/bottle.tar.xz"]


def test_unknown_category_lists_valid_ones(tmp_path):
    with pytest.raises(DdadError) as caught:
        fetch_mvtec(["bottle", "nope"], tmp_path)
    message = str(caught.value)
    assert "nope" in message
    assert all(name in message for name in MVTEC_CATEGORIES)
    assert list(tmp_path.iterdir()) == []


def test_wrong_pin_installs_nothing(server, tmp_path):
    root = tmp_path / "mvtec"
    with pytest.raises(DdadError, match="expected " + "0" * 64):
        fetch(server, ["bottle"], root, sha256={"bottle": "0" * 64})
    assert not (root / "bottle").exists()


def test_archive_without_category_folder_is_refused_and_leaves_no_staging(server, tmp_path):
    server.files["/bottle.tar.xz"] = category_archive("bottle", top="other")
    root = tmp_path / "mvtec"
    with pytest.raises(DdadError, match="no top-level 'bottle/' folder"):
        fetch(server, ["bottle"], root)
    assert sorted(p.name for p in root.iterdir()) == [".downloads"]


def test_partial_category_folder_is_refused(server, tmp_path):
    (tmp_path / "bottle/train/good").mkdir(parents=True)
    with pytest.raises(DdadError, match="lacks test, ground_truth"):
        fetch(server, ["bottle"], tmp_path)
    assert server.requests == []


def test_unreachable_server_hints_at_local_data(tmp_path, monkeypatch):
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    with pytest.raises(DdadError) as caught:
        fetch_mvtec(
            ["bottle"], tmp_path, url_template=unreachable_url(TEMPLATE_PATH), progress=False
        )
    assert "set data.source: folder and data.root:" in str(caught.value)
