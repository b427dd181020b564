"""fetch_data@<category> and the category types evaluate reports, run in a throw-away folder."""

import copy
import shutil
from pathlib import Path

import pytest
import yaml
from http_server import FileServer, unreachable_url
from mvtec_archive import category_files, make_mvtec_archive

from ddad.data.mvtec import MVTEC_PAGE
from ddad.errors import DdadError
from stages import fetch_data
from stages.evaluate import category_type, guessed_type

REPO = Path(__file__).resolve().parents[1]
REAL = yaml.safe_load((REPO / "params.yaml").read_text())
ARCHIVE = "mvtec_anomaly_detection.tar.xz"


def params_with(**data) -> dict:
    params = copy.deepcopy(REAL)
    params["data"].update(data)
    return params


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write_category(root: Path, category: str) -> None:
    for name, data in category_files(category, train=3).items():
        (root / category / name).parent.mkdir(parents=True, exist_ok=True)
        (root / category / name).write_bytes(data)


def test_a_folder_is_copied_and_follows_deletions(workdir, capsys):
    write_category(workdir / "mine", "bottle")
    params = params_with(source="folder", root=str(workdir / "mine"))
    fetch_data.main(params, ["bottle"])
    assert "copied from" in capsys.readouterr().out
    copied = workdir / "data/images/bottle/train/good"
    assert sorted(p.name for p in copied.iterdir()) == ["000.png", "001.png", "002.png"]
    (workdir / "mine/bottle/train/good/001.png").unlink()
    fetch_data.main(params, ["bottle"])
    assert sorted(p.name for p in copied.iterdir()) == ["000.png", "002.png"]


def test_good_parts_only_are_copied_and_said_to_have_nothing_to_measure(workdir, capsys):
    write_category(workdir / "mine", "screw")
    for folder in ("test", "ground_truth"):
        shutil.rmtree(workdir / "mine/screw" / folder)
    fetch_data.main(params_with(source="folder", root="mine"), ["screw"])
    assert capsys.readouterr().out.endswith("; no test images yet: nothing to measure\n")
    assert sorted(p.name for p in (workdir / "data/images/screw").iterdir()) == ["train"]


def test_your_folder_is_only_read(workdir):
    write_category(workdir / "data/own", "screw")
    own = workdir / "data/own"
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in own.rglob("*")}
    fetch_data.main(params_with(source="folder", root="data/own"), ["screw"])
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in own.rglob("*")} == before
    copies = {
        p.relative_to(workdir / "data/images"): p.read_bytes()
        for p in (workdir / "data/images").rglob("*.png")
    }
    assert copies == {p.relative_to(own): p.read_bytes() for p in own.rglob("*.png")}
    with pytest.raises(DdadError, match="no category 'bottle' under data/own"):
        fetch_data.main(params_with(source="folder", root="data/own"), ["bottle"])


@pytest.mark.parametrize("root", ["data/images", "mine"])
def test_an_empty_image_stops_fetch_data_naming_it(workdir, root):
    """Not reconstruct, stages later: the file is named where the data comes in."""
    write_category(workdir / root, "screw")
    empty = Path(root) / "screw/train/good/001.png"
    empty.write_bytes(b"")
    with pytest.raises(DdadError, match=rf"^image {empty} is empty \(0 bytes\); copy it again"):
        fetch_data.main(params_with(source="folder", root=root), ["screw"])


def test_an_unreachable_archive_says_where_to_get_it_and_the_ways_out(workdir):
    with FileServer({}) as server:
        url = server.url(f"/{ARCHIVE}")
        with pytest.raises(DdadError) as caught:
            fetch_data.main(params_with(source="mvtec", mvtec_url=url), ["bottle"])
    message = str(caught.value)
    assert message.startswith(f"cannot download {url}: HTTP 404 Not Found. ")
    assert MVTEC_PAGE in message
    assert f"put {ARCHIVE} at data/downloads/{ARCHIVE}" in message
    assert "data.source: folder and data.root: <your extracted MVTec AD folder>" in message
    assert not (workdir / "data/images").exists()


def test_an_archive_put_in_place_is_used_offline_and_its_checksum_printed(workdir, capsys):
    (workdir / "data/downloads").mkdir(parents=True)
    make_mvtec_archive(workdir / "data/downloads" / ARCHIVE, train=3)
    params = params_with(source="mvtec", mvtec_url=unreachable_url(f"/{ARCHIVE}"))
    fetch_data.main(params, ["bottle"])
    out = capsys.readouterr().out
    assert "fetch_data@bottle: 3 training images, extracted from data/downloads/" in out
    assert "pin it in data.mvtec_sha256" in out
    assert sorted(p.name for p in (workdir / "data/images").iterdir()) == ["bottle"]


def test_a_synthetic_category_is_the_same_whatever_else_is_fetched(workdir, tmp_path_factory):
    params = params_with(synthetic={"seed": 0, "train": 2, "test_good": 1, "test_defect": 1})
    fetch_data.main(params, ["washer"])
    fetch_data.main(params, ["stripes"])
    alone = tmp_path_factory.mktemp("alone")
    shutil.copytree(workdir / "data/images/stripes", alone / "stripes")
    shutil.rmtree(workdir / "data/images")
    fetch_data.main(params, ["stripes"])
    files = sorted((alone / "stripes").rglob("*.png"))
    assert files and all(
        p.read_bytes() == (workdir / "data/images" / p.relative_to(alone)).read_bytes()
        for p in files
    )


@pytest.mark.parametrize(
    ("source", "category", "types", "expected"),
    [
        ("synthetic", "washer", {}, "object"),
        ("folder", "bottle", {}, "object"),
        ("folder", "carpet", {}, "texture"),
        ("folder", "my_part", {}, "texture"),
        ("folder", "my_part", {"my_part": "object"}, "object"),
        ("mvtec", "screw", {"screw": "texture"}, "texture"),
    ],
)
def test_category_type(source, category, types, expected):
    data = params_with(source=source, category_types=types)["data"]
    assert category_type(data, category) == expected


def test_only_a_guessed_type_is_said():
    data = params_with(source="folder", category_types={"named": "object"})["data"]
    assert guessed_type(data, "my_part") == (
        "category 'my_part': type texture (not an MVTec AD name; set data.category_types to change)"
    )
    assert guessed_type(data, "named") is None
    assert guessed_type(data, "bottle") is None
