import io
import random
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest

from ddad.data.archive import safe_extract
from ddad.errors import DdadError

# Each unsafe member: (name, tar type, link target). Link targets reach tmp_path/outside.txt
# from the extraction root (tmp_path/work/<staging>), so a naive extractor would succeed.
UNSAFE = {
    "dotdot": ("../x", tarfile.REGTYPE, ""),
    "absolute": ("/x", tarfile.REGTYPE, ""),
    "symlink": ("link", tarfile.SYMTYPE, "../../outside.txt"),
    "hardlink": ("hard", tarfile.LNKTYPE, "../../outside.txt"),
    "fifo": ("pipe", tarfile.FIFOTYPE, ""),
    "device": ("tty", tarfile.CHRTYPE, ""),
}
ZIP_FILE_TYPES = {
    tarfile.REGTYPE: stat.S_IFREG,
    tarfile.SYMTYPE: stat.S_IFLNK,
    tarfile.FIFOTYPE: stat.S_IFIFO,
    tarfile.CHRTYPE: stat.S_IFCHR,
}


def make_tar(path: Path, members: list[tuple[str, bytes, str]], mode: str = "w:gz") -> Path:
    """Write (name, tar type, link target) members; regular files hold their own name."""
    with tarfile.open(path, mode) as tar:
        for name, kind, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
            data = name.encode() if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def make_zip(path: Path, members: list[tuple[str, bytes, str]]) -> Path:
    """The zip twin of make_tar: symlinks store their target as data, as Info-ZIP does."""
    with zipfile.ZipFile(path, "w") as zipped:
        for name, kind, link in members:
            info = zipfile.ZipInfo(name)
            info.external_attr = (ZIP_FILE_TYPES[kind] | 0o644) << 16
            zipped.writestr(info, link if kind == tarfile.SYMTYPE else name)
    return path


def assert_refused(archive: Path, dest: Path, member: str) -> None:
    with pytest.raises(DdadError) as caught:
        safe_extract(archive, dest)
    assert str(caught.value).startswith(f"refusing to extract {archive}: ")
    assert repr(member) in str(caught.value)
    assert list(dest.parent.iterdir()) == []


@pytest.fixture
def outside(tmp_path):
    target = tmp_path / "outside.txt"
    target.write_text("secret")
    return target


@pytest.mark.parametrize("case", UNSAFE)
def test_unsafe_tar_member_is_refused_and_leaves_nothing(tmp_path, outside, case):
    name = UNSAFE[case][0]
    archive = make_tar(tmp_path / "a.tar.gz", [("ok.txt", tarfile.REGTYPE, ""), UNSAFE[case]])
    assert_refused(archive, tmp_path / "work" / "dest", name)
    assert not (tmp_path / "x").exists()
    assert outside.read_text() == "secret"


@pytest.mark.parametrize("case", [c for c in UNSAFE if c != "hardlink"])
def test_unsafe_zip_member_is_refused_and_leaves_nothing(tmp_path, outside, case):
    name = UNSAFE[case][0]
    archive = make_zip(tmp_path / "a.zip", [("ok.txt", tarfile.REGTYPE, ""), UNSAFE[case]])
    assert_refused(archive, tmp_path / "work" / "dest", name)
    assert not (tmp_path / "x").exists()


def test_symlink_redirected_by_a_later_link_is_refused(tmp_path):
    # "a" -> "hop/../x" stays inside while "hop" does not exist; "hop" -> "." then sends it up.
    members = [("a", tarfile.SYMTYPE, "hop/../x"), ("hop", tarfile.SYMTYPE, ".")]
    archive = make_tar(tmp_path / "a.tar", members, mode="w")
    assert_refused(archive, tmp_path / "work" / "dest", "a")


def test_writing_through_an_earlier_symlink_is_refused(tmp_path):
    members = [("a", tarfile.SYMTYPE, "hop/../x"), ("hop", tarfile.SYMTYPE, ".")]
    members.append(("a", tarfile.REGTYPE, ""))
    archive = make_tar(tmp_path / "a.tar", members, mode="w")
    assert_refused(archive, tmp_path / "work" / "dest", "a")
    assert not (tmp_path / "work" / "x").exists()


GOOD = [
    ("pack", tarfile.DIRTYPE, ""),
    ("pack/sub/file.txt", tarfile.REGTYPE, ""),
    ("pack/alias", tarfile.SYMTYPE, "sub/file.txt"),
]


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [
        (".tar", "w"),
        (".tar.gz", "w:gz"),
        (".tgz", "w:gz"),
        (".tar.xz", "w:xz"),
        (".tar.bz2", "w:bz2"),
    ],
)
def test_good_tar_extracts_completely(tmp_path, suffix, mode):
    members = [*GOOD, ("pack/same", tarfile.LNKTYPE, "pack/sub/file.txt")]
    archive = make_tar(tmp_path / f"a{suffix}", members, mode)
    dest = tmp_path / "work" / "dest"
    safe_extract(archive, dest)
    assert (dest / "pack/sub/file.txt").read_text() == "pack/sub/file.txt"
    assert (dest / "pack/alias").read_text() == "pack/sub/file.txt"
    assert (dest / "pack/same").read_text() == "pack/sub/file.txt"
    assert list(dest.parent.iterdir()) == [dest]


def test_good_zip_extracts_completely(tmp_path):
    archive = make_zip(tmp_path / "a.zip", [m for m in GOOD if m[1] != tarfile.DIRTYPE])
    dest = tmp_path / "work" / "dest"
    safe_extract(archive, dest)
    assert (dest / "pack/sub/file.txt").read_text() == "pack/sub/file.txt"
    assert (dest / "pack/alias").is_symlink()
    assert (dest / "pack/alias").read_text() == "pack/sub/file.txt"
    assert list(dest.parent.iterdir()) == [dest]


def test_existing_destination_is_refused(tmp_path):
    archive = make_tar(tmp_path / "a.tar.gz", GOOD)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DdadError, match="already exists"):
        safe_extract(archive, dest)
    assert list(dest.iterdir()) == []


def test_archive_cut_short_mid_extraction_leaves_nothing(tmp_path):
    archive = tmp_path / "a.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data in [
            ("pack/first.txt", b"first"),
            ("pack/big.bin", random.randbytes(50_000)),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(archive.read_bytes()[:-10_000])
    dest = tmp_path / "work" / "dest"
    with pytest.raises(DdadError, match="delete it and download it again"):
        safe_extract(archive, dest)
    assert list(dest.parent.iterdir()) == []


def test_non_archive_is_refused(tmp_path):
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(b"<html>not found</html>")
    with pytest.raises(DdadError, match="not a tar or zip archive"):
        safe_extract(archive, tmp_path / "dest")
    assert list(tmp_path.iterdir()) == [archive]


TWO_FOLDERS = [
    ("license.txt", tarfile.REGTYPE, ""),
    *GOOD,
    ("other/file.txt", tarfile.REGTYPE, ""),
    ("packed/file.txt", tarfile.REGTYPE, ""),
]


@pytest.mark.parametrize("make", [make_tar, make_zip])
def test_only_extracts_one_top_level_folder(tmp_path, make):
    members = [m for m in TWO_FOLDERS if make is make_tar or m[1] != tarfile.DIRTYPE]
    archive = make(tmp_path / ("a.tar.gz" if make is make_tar else "a.zip"), members)
    dest = tmp_path / "work" / "dest"
    safe_extract(archive, dest, only="pack")
    assert [p.name for p in dest.iterdir()] == ["pack"]
    assert (dest / "pack/alias").read_text() == "pack/sub/file.txt"


def test_only_still_refuses_an_unsafe_member_inside_the_folder(tmp_path, outside):
    archive = make_tar(tmp_path / "a.tar.gz", [*GOOD, ("pack/link", *UNSAFE["symlink"][1:])])
    with pytest.raises(DdadError, match="'pack/link' is a symlink"):
        safe_extract(archive, tmp_path / "work" / "dest", only="pack")
    assert list((tmp_path / "work").iterdir()) == []
