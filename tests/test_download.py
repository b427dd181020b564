import hashlib
import random

import pytest
from http_server import FileServer, unreachable_url

from ddad.data.download import download
from ddad.errors import DdadError

PAYLOAD = random.Random(0).randbytes(300_000)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
QUICK = {"retries": 0, "backoff": 0.0, "timeout": 5.0, "progress": False}


@pytest.fixture
def server():
    with FileServer({"/data.bin": PAYLOAD}) as running:
        yield running


def test_download_writes_file_returns_hash_and_reports_unpinned_hash(server, tmp_path, capsys):
    dest = tmp_path / "dl" / "data.bin"
    assert download(server.url("/data.bin"), dest, **QUICK) == PAYLOAD_SHA
    assert dest.read_bytes() == PAYLOAD
    assert sorted(p.name for p in dest.parent.iterdir()) == ["data.bin"]
    assert f"sha256 {PAYLOAD_SHA}  data.bin (pin it to verify future downloads)" in (
        capsys.readouterr().err
    )


def test_pinned_download_prints_no_hash(server, tmp_path, capsys):
    download(server.url("/data.bin"), tmp_path / "data.bin", sha256=PAYLOAD_SHA, **QUICK)
    assert "sha256" not in capsys.readouterr().err


def test_checksum_mismatch_names_both_hashes_and_leaves_nothing(server, tmp_path):
    folder = tmp_path / "dl"
    with pytest.raises(DdadError) as caught:
        download(server.url("/data.bin"), folder / "data.bin", sha256="0" * 64, **QUICK)
    message = str(caught.value)
    assert server.url("/data.bin") in message
    assert "0" * 64 in message and PAYLOAD_SHA in message
    assert list(folder.iterdir()) == []


def test_existing_file_is_verified_without_network(tmp_path):
    dest = tmp_path / "data.bin"
    dest.write_bytes(PAYLOAD)
    url = unreachable_url("/data.bin")
    assert download(url, dest, sha256=PAYLOAD_SHA, **QUICK) == PAYLOAD_SHA
    with pytest.raises(DdadError, match="delete the file"):
        download(url, dest, sha256="f" * 64, **QUICK)


def test_dropped_connection_is_resumed_by_the_next_call(server, tmp_path):
    dest = tmp_path / "data.bin"
    server.drop_after = 100_000
    with pytest.raises(DdadError, match="cannot download"):
        download(server.url("/data.bin"), dest, **QUICK)
    assert not dest.exists()
    assert (tmp_path / "data.bin.part").stat().st_size == 100_000

    assert download(server.url("/data.bin"), dest, **QUICK) == PAYLOAD_SHA
    assert "range" not in server.requests[0].headers
    assert server.requests[1].headers["range"] == "bytes=100000-"
    assert dest.read_bytes() == PAYLOAD
    assert not (tmp_path / "data.bin.part").exists()


def test_retries_recover_within_one_call(server, tmp_path):
    server.drop_after = 1234
    server.fail_with = [503]
    dest = tmp_path / "data.bin"
    assert download(server.url("/data.bin"), dest, **{**QUICK, "retries": 2}) == PAYLOAD_SHA
    assert [r.headers.get("range") for r in server.requests] == [None, None, "bytes=1234-"]
    assert dest.read_bytes() == PAYLOAD


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(b"stale bytes")
    server.ignore_range = True
    download(server.url("/data.bin"), tmp_path / "data.bin", sha256=PAYLOAD_SHA, **QUICK)
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_416_accepts_a_complete_part_without_refetching(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD)
    download(server.url("/data.bin"), tmp_path / "data.bin", sha256=PAYLOAD_SHA, **QUICK)
    assert len(server.requests) == 1
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_416_with_an_oversized_part_restarts(server, tmp_path):
    (tmp_path / "data.bin.part").write_bytes(PAYLOAD + b"junk")
    download(server.url("/data.bin"), tmp_path / "data.bin", sha256=PAYLOAD_SHA, **QUICK)
    assert [r.headers.get("range") for r in server.requests] == ["bytes=300004-", None]
    assert (tmp_path / "data.bin").read_bytes() == PAYLOAD


def test_client_error_fails_at_once(server, tmp_path):
    with pytest.raises(DdadError, match="HTTP 404"):
        download(server.url("/missing.bin"), tmp_path / "x.bin", **{**QUICK, "retries": 3})
    assert len(server.requests) == 1


def test_unreachable_host_backs_off_then_gives_one_line_with_url_and_hint(tmp_path, monkeypatch):
    sleeps = []
    monkeypatch.setattr("time.sleep", sleeps.append)
    url = unreachable_url("/data.bin")
    hint = "set data.source: folder to use local data"
    with pytest.raises(DdadError) as caught:
        download(url, tmp_path / "data.bin", hint=hint, **{**QUICK, "retries": 3, "backoff": 0.5})
    assert sleeps == [0.5, 1.0, 2.0]
    message = str(caught.value)
    assert message.startswith(f"cannot download {url}: ")
    assert "refused" in message.lower()
    assert message.endswith(hint)
    assert "\n" not in message
