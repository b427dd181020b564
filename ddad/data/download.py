"""Resumable, checksum-pinned HTTP downloads, so multi-gigabyte data sets survive flaky links."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from email.message import Message
from pathlib import Path

from ddad.errors import DdadError
from ddad.progress import progress_bar

_CHUNK_BYTES = 1 << 20
_CONTENT_RANGE = re.compile(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)")


class _Failure(Exception):
    """A download attempt failed; the message is the reason shown to the user."""


class _Transient(_Failure):
    """A failure worth retrying (reset, incomplete body, timeout, 5xx, unreachable host)."""


class _RangeNotSatisfiable(_Transient):
    """The server has no bytes past the part already on disk; `total` is its size if it said."""

    def __init__(self, total: int | None) -> None:
        super().__init__("HTTP 416 Range Not Satisfiable")
        self.total = total


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks so large archives never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: Path,
    *,
    sha256: str | None = None,
    retries: int = 4,
    backoff: float = 1.0,
    timeout: float = 30.0,
    progress: bool = True,
    hint: str = "",
) -> str:
    """Download `url` to `dest` and return its sha256; an existing `dest` costs no network.

    Bytes land in `<dest>.part` first, so an interrupted download resumes where it stopped
    (on a later retry or a later call) and `dest` only ever appears complete and verified.
    """
    dest = Path(dest)
    if dest.exists():
        return _verify_existing(dest, sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(retries + 1):
        try:
            _fetch_rest(url, part, timeout=timeout, progress=progress)
            break
        except _Failure as err:
            if not isinstance(err, _Transient) or attempt == retries:
                message = f"cannot download {url}: {err}." + (f" {hint}" if hint else "")
                raise DdadError(" ".join(message.split())) from None
            time.sleep(backoff * 2**attempt)
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise DdadError(
            f"{url}: downloaded file has sha256 {digest}, expected {sha256}; it was deleted, "
            "check the URL and the pinned checksum"
        )
    if sha256 is None:
        print(f"sha256 {digest}  {dest.name} (pin it to verify future downloads)", file=sys.stderr)
    os.replace(part, dest)
    return digest


def _verify_existing(dest: Path, sha256: str | None) -> str:
    """Hash of a file downloaded earlier, refused when it no longer matches the pin."""
    digest = sha256_file(dest)
    if sha256 is not None and digest != sha256.lower():
        raise DdadError(
            f"{dest} has sha256 {digest}, expected {sha256}; delete the file to download it again"
        )
    return digest


def _fetch_rest(url: str, part: Path, *, timeout: float, progress: bool) -> None:
    """Bring `part` up to the whole file with one request, or two when the server cannot resume."""
    have = part.stat().st_size if part.exists() else 0
    try:
        response = _open(url, have, timeout)
    except _RangeNotSatisfiable as err:
        if err.total == have:
            return
        part.unlink()
        have = 0
        response = _open(url, have, timeout)
    with response:
        start, total = _body_span(response, have, part)
        with (
            open(part, "ab" if start else "wb") as out,
            progress_bar(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=part.stem,
                disable=not progress,
            ) as bar,
        ):
            for chunk in _chunks(response):
                out.write(chunk)
                bar.update(len(chunk))
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size} of {total} bytes")


def _open(url: str, start: int, timeout: float) -> http.client.HTTPResponse:
    """GET `url` from byte `start` on, sorting failures into transient and fatal ones."""
    headers = {"Range": f"bytes={start}-"} if start else {}
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 416 and start:
            raise _RangeNotSatisfiable(_content_range(err.headers)[1]) from err
        reason = f"HTTP {err.code} {err.reason}"
        raise (_Transient(reason) if err.code >= 500 else _Failure(reason)) from err
    except (urllib.error.URLError, http.client.HTTPException, OSError) as err:
        raise _Transient(_reason(err)) from err


def _body_span(response: http.client.HTTPResponse, have: int, part: Path) -> tuple[int, int | None]:
    """Where the body starts in the file (0 restarts it) and the file's total size, if known."""
    if response.status != 206:
        length = response.headers.get("Content-Length")
        return 0, int(length) if length and length.isdigit() else None
    first, total = _content_range(response.headers)
    if first != have:
        part.unlink()
        raise _Transient(f"server resumed at byte {first} instead of {have}")
    return have, total


def _content_range(headers: Message) -> tuple[int | None, int | None]:
    """(first byte, total size) from a Content-Range header, None for what it does not state."""
    match = _CONTENT_RANGE.fullmatch(headers.get("Content-Range", "").strip())
    if match is None:
        return None, None
    first, total = match.groups()
    return (int(first) if first else None, int(total) if total.isdigit() else None)


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The body in chunks; a reset or stalled connection becomes a transient failure."""
    while True:
        try:
            chunk = response.read(_CHUNK_BYTES)
        except (http.client.HTTPException, OSError) as err:
            raise _Transient(_reason(err)) from err
        if not chunk:
            return
        yield chunk


def _reason(err: Exception) -> str:
    """The human part of a network error (URLError wraps the socket error in `reason`)."""
    reason = err.reason if isinstance(err, urllib.error.URLError) else err
    return str(reason) or type(reason).__name__
