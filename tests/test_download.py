"""The download machinery against a local HTTP server on 127.0.0.1 serving bytes the test makes."""

import hashlib

import pytest
from loopback import LoopbackServer

from natv2.supernet.download import DownloadError, default_cache_dir, download
from natv2.supernet.sources import PRETRAINED, pretrained

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server():
    srv = LoopbackServer({"/file.bin": PAYLOAD})
    yield srv
    srv.close()


def test_full_download_is_verified_and_atomic(server, tmp_path):
    dest = tmp_path / "cache" / "net.pt"
    got = download(server.url + "/file.bin", dest, sha256=SHA, show_progress=False)
    assert dest.read_bytes() == PAYLOAD
    assert got.sha256 == SHA and got.size == len(PAYLOAD)
    assert not (tmp_path / "cache" / "net.pt.part").exists()
    # a second call with the pinned hash reuses the file without a request
    n = len(server.requests)
    download(server.url + "/file.bin", dest, sha256=SHA, show_progress=False)
    assert len(server.requests) == n


def test_resume_after_the_server_cuts_the_connection(server, tmp_path):
    server.mode = "cut-once"
    dest = tmp_path / "net.pt"
    got = download(server.url + "/file.bin", dest, sha256=SHA, backoff=0.01, show_progress=False)
    assert dest.read_bytes() == PAYLOAD and got.sha256 == SHA
    assert server.requests[0]["range"] is None
    assert server.requests[1]["range"] == f"bytes={len(PAYLOAD) // 2}-"


def test_server_without_range_support_restarts_from_zero(server, tmp_path):
    dest = tmp_path / "net.pt"
    (tmp_path / "net.pt.part").write_bytes(b"garbage that is not a prefix")
    server.mode = "no-range"
    download(server.url + "/file.bin", dest, sha256=SHA, show_progress=False)
    assert dest.read_bytes() == PAYLOAD


def test_404_is_one_line_naming_url_and_status(server, tmp_path):
    with pytest.raises(DownloadError) as info:
        download(server.url + "/missing.bin", tmp_path / "x.pt", show_progress=False)
    msg = str(info.value)
    assert "HTTP 404" in msg and "/missing.bin" in msg and "\n" not in msg
    assert list(tmp_path.iterdir()) == []
    assert len(server.requests) == 1  # a 4xx is not retried


def test_timeout_is_retried_then_reported(server, tmp_path):
    server.mode = "slow"
    with pytest.raises(DownloadError, match="timed out.*after 2 attempts"):
        download(server.url + "/file.bin", tmp_path / "x.pt", timeout=0.3, retries=1, backoff=0.01,
                 show_progress=False)
    assert not (tmp_path / "x.pt").exists()


def test_sha_mismatch_leaves_nothing_behind(server, tmp_path):
    wrong = "0" * 64
    with pytest.raises(DownloadError) as info:
        download(server.url + "/file.bin", tmp_path / "x.pt", sha256=wrong, show_progress=False)
    assert f"expected {wrong}, got {SHA}" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_host_names_the_cause(tmp_path):
    # Port 9 on loopback: nothing listens, the connection is refused at once.
    with pytest.raises(DownloadError, match=r"http://127.0.0.1:9/x.*connection refused"):
        download("http://127.0.0.1:9/x", tmp_path / "x.pt", retries=0, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_dns_failure_is_not_masked(tmp_path):
    # .invalid is reserved (RFC 2606): resolution fails without any traffic leaving the machine.
    with pytest.raises(DownloadError, match="DNS lookup failed"):
        download("http://natv2-test.invalid/x", tmp_path / "x.pt", retries=0, show_progress=False)


def test_file_url(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(PAYLOAD)
    got = download(src.as_uri(), tmp_path / "out" / "x.pt", sha256=SHA, show_progress=False)
    assert got.path.read_bytes() == PAYLOAD


def test_cache_dir_never_relative_to_cwd(monkeypatch, tmp_path):
    monkeypatch.delenv("NATV2_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "natv2"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_cache_dir().is_absolute()


def test_registry_names_and_unknown_name():
    assert set(PRETRAINED) == {"ofa_mbv3_d234_e346_k357_w1.0", "ofa_mbv3_d234_e346_k357_w1.2"}
    assert pretrained("ofa_mbv3_d234_e346_k357_w1.2").width_mult == 1.2
    with pytest.raises(ValueError, match="unknown pretrained super-network 'ofa_x'; valid: ofa_mbv3"):
        pretrained("ofa_x")
