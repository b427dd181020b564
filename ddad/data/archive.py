"""All-or-nothing extraction of tar and zip archives that refuses members escaping the target."""

from __future__ import annotations

import gzip
import lzma
import os
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import NoReturn

from ddad.errors import DdadError

_CORRUPT = (
    tarfile.TarError,
    zipfile.BadZipFile,
    EOFError,
    lzma.LZMAError,
    zlib.error,
    gzip.BadGzipFile,
)
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


@dataclass(frozen=True)
class _Member:
    """What safety depends on for one member, whatever the archive format."""

    name: str
    kind: str  # "file", "dir", "symlink", "hardlink" or "special"
    link: str = ""


def safe_extract(archive: Path, dest: Path, only: str | None = None) -> None:
    """Extract `archive` (tar, tar.gz/xz/bz2 or zip) into the new folder `dest`, all or nothing.

    Members go into a hidden sibling folder (same filesystem) that is renamed to `dest` only
    once every member is in; any failure removes it, so no half-extracted tree is left behind.
    With `only`, just the members inside that top-level folder are extracted, in one pass
    through the archive: one category out of a data set's single multi-gigabyte archive.
    """
    archive, dest = Path(archive), Path(dest)
    if dest.exists():
        raise DdadError(
            f"cannot extract {archive}: {dest} already exists; delete it or choose another folder"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        _extract_into(archive, staging, only)
        _refuse_escaping_symlinks(archive, staging)
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _extract_into(archive: Path, root: Path, only: str | None) -> None:
    """Extract the wanted members into `root`, vetting each one against the disk just before it
    lands."""
    try:
        if tarfile.is_tarfile(archive):
            with tarfile.open(archive) as tar:
                members = _vetted_tar_members(archive, root, tar, only)
                tar.extractall(root, members=members, **_TAR_FILTER)
        elif zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zipped:
                _extract_zip(archive, root, zipped, only)
        else:
            raise DdadError(
                f"cannot extract {archive}: not a tar or zip archive; "
                "delete it and download it again"
            )
    except _CORRUPT as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        raise DdadError(
            f"cannot extract {archive}: {reason}; delete it and download it again"
        ) from err


def _vetted_tar_members(
    archive: Path, root: Path, tar: tarfile.TarFile, only: str | None
) -> Iterator[tarfile.TarInfo]:
    """The wanted tar members in order, each refused before extraction if it is unsafe."""
    for info in tar:
        if _wanted(info.name, only):
            _vet(archive, root, _tar_member(info))
            yield info


def _wanted(name: str, only: str | None) -> bool:
    """Whether a member is inside the top-level folder `only` (every member when it is None)."""
    return only is None or PurePosixPath(name).parts[:1] == (only,)


def _tar_member(info: tarfile.TarInfo) -> _Member:
    if info.issym():
        return _Member(info.name, "symlink", info.linkname)
    if info.islnk():
        return _Member(info.name, "hardlink", info.linkname)
    if info.isdir():
        return _Member(info.name, "dir")
    return _Member(info.name, "file" if info.isreg() else "special")


def _extract_zip(archive: Path, root: Path, zipped: zipfile.ZipFile, only: str | None) -> None:
    """Extract zip members one by one; symlinks (stored as their target text) become real links."""
    for info in zipped.infolist():
        if not _wanted(info.filename, only):
            continue
        member = _zip_member(zipped, info)
        _vet(archive, root, member)
        if member.kind == "symlink":
            link = root / member.name
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(member.link, link)
        else:
            zipped.extract(info, root)


def _zip_member(zipped: zipfile.ZipFile, info: zipfile.ZipInfo) -> _Member:
    file_type = stat.S_IFMT(info.external_attr >> 16)
    if info.is_dir():
        return _Member(info.filename, "dir")
    if file_type == stat.S_IFLNK:
        return _Member(info.filename, "symlink", zipped.read(info).decode())
    # Archives made on DOS/Windows store no Unix file type (0): those are regular files.
    return _Member(info.filename, "file" if file_type in (0, stat.S_IFREG) else "special")


def _vet(archive: Path, root: Path, member: _Member) -> None:
    """Refuse a member that would write, or point, outside `root` given what is on disk now."""
    path = PurePosixPath(member.name)
    if path.is_absolute():
        _refuse(archive, member.name, "has an absolute path")
    if ".." in path.parts:
        _refuse(archive, member.name, "has a '..' component")
    if member.kind == "special":
        _refuse(archive, member.name, "is a device, fifo or other special file")
    target = root / path
    is_link = member.kind in ("symlink", "hardlink")
    if not _inside(root, target.parent if is_link else target):
        _refuse(archive, member.name, "would be written through a link that points outside")
    if member.kind == "symlink" and not _inside(root, target.parent / member.link):
        _refuse(archive, member.name, f"is a symlink to {member.link!r}, outside the archive")
    if member.kind == "hardlink" and not _inside(root, root / member.link):
        _refuse(archive, member.name, f"is a hard link to {member.link!r}, outside the archive")


def _refuse_escaping_symlinks(archive: Path, root: Path) -> None:
    """Check symlinks again once all are in place: a later link can redirect an earlier one."""
    for folder, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(folder, name)
            if path.is_symlink() and not _inside(root, path):
                member = path.relative_to(root).as_posix()
                _refuse(archive, member, "is a symlink that resolves outside the archive")


def _inside(root: Path, path: Path) -> bool:
    """Whether `path`, with every symlink on disk resolved, stays within `root`."""
    real_root = os.path.realpath(root)
    return os.path.commonpath([real_root, os.path.realpath(path)]) == real_root


def _refuse(archive: Path, member: str, problem: str) -> NoReturn:
    raise DdadError(
        f"refusing to extract {archive}: member {member!r} {problem}; "
        "the archive is unsafe, get it from a trusted source"
    )
