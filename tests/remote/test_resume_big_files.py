"""Big files cut short and resumed, through a proxy that drops the connection after so
many bytes, to a real OpenSSH sshd: the next try sends only the rest, and only from a
partial proven to be the same source's start; a partial someone changed, or a source that
changed, is started over. The bytes delivered are always the source's. Only 127.0.0.1."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
import structlog

from tests.faultproxy import FaultProxy
from tests.sftp_routes import endpoint
from tests.sshd import SshServer
from xchange.errors import RemoteError
from xchange.remote.resume import MARGIN, MIN_RESUME
from xchange.remote.sftp import SFTPRemote

pytestmark = pytest.mark.sftp

T = TypeVar("T")
SIZE = 40 << 20
#: The proxy cuts a connection after this many bytes (uploads: sent; downloads: received).
EVERY = 10 << 20
TEMP = ".big.bin.t.xchange-part"


@pytest.fixture
def proxy(sshd: SshServer) -> Iterator[FaultProxy]:
    p = FaultProxy(sshd.port).start()
    yield p
    p.stop()


def through(sshd: SshServer, proxy: FaultProxy, folder: Path, tmp_path: Path) -> SFTPRemote:
    """The test sshd's ``folder`` reached through the proxy, big files by OpenSSH's client,
    records of cut uploads under ``tmp_path``."""
    known = tmp_path / "known_hosts"
    known.write_text(
        sshd.known_hosts.read_text().replace(
            f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{proxy.port}"
        )
    )
    remote = SFTPRemote(
        "partner", endpoint(sshd, folder, port=proxy.port, known_hosts=known, accelerate_mb=1)
    )
    remote.keep_partials(tmp_path / "partials")
    return remote


def source(tmp_path: Path, name: str = "big.bin", size: int = SIZE) -> tuple[Path, str]:
    """A file of ``size`` random bytes and its sha256."""
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    return path, hashlib.sha256(path.read_bytes()).hexdigest()


def upload(remote: SFTPRemote, src: Path, sha256: str) -> None:
    with open(src, "rb") as fh:
        remote.put_atomic(
            "big.bin", fh, src.stat().st_size, temp_name=TEMP, overwrite=True, sha256=sha256
        )


def tries(work: Callable[[], T], limit: int = 10) -> tuple[T, int]:
    """Call ``work`` until it succeeds (a retryable error each time before): its result and
    the number of failed tries."""
    for failed in range(limit):
        try:
            return work(), failed
        except RemoteError as exc:
            assert exc.retryable, repr(exc)
    raise AssertionError(f"still failing after {limit} tries")


def events(logs: list[dict[str, object]], name: str) -> list[dict[str, object]]:
    return [e for e in logs if e["event"] == name]


def said(logs: list[dict[str, object]]) -> str:
    """What was logged, in short (for a failure's message)."""
    return "\n".join(
        f"{e['event']} {e.get('offset', '')} {e.get('reason', '')} {e.get('error', '')}"
        for e in logs
        if e["event"] != "remote.connected"
    )


def test_an_upload_cut_three_times_resumes_and_delivers_the_same_bytes(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """Each cut leaves the temporary file; each next try proves it and sends the rest:
    three resumes, about the file's size sent in all, the file delivered whole."""
    folder = sshd.folder("resume-up")
    src, sha = source(tmp_path)
    remote = through(sshd, proxy, folder, tmp_path)
    remote.list()  # paramiko's session first: it is never cut (it sends little)
    proxy.mode, proxy.limit, proxy.cuts = "drop_after", EVERY, 3
    try:
        with structlog.testing.capture_logs() as logs:
            _, failed = tries(lambda: upload(remote, src, sha))
    finally:
        remote.close()
    assert (failed, proxy.cut) == (3, 3)
    resumed = events(logs, "remote.resumed")
    assert len(resumed) == 3, said(logs)
    assert events(logs, "remote.resume_refused") == []
    offsets = [int(str(e["offset"])) for e in resumed]
    assert offsets == sorted(offsets) and offsets[0] >= MIN_RESUME
    assert sorted(os.listdir(folder)) == ["big.bin"]
    assert hashlib.sha256((folder / "big.bin").read_bytes()).hexdigest() == sha
    assert os.listdir(tmp_path / "partials") == []


def cut_once(remote: SFTPRemote, proxy: FaultProxy, src: Path, sha: str) -> None:
    """An upload cut once, leaving its partial temporary file."""
    proxy.mode, proxy.limit, proxy.cuts = "drop_after", EVERY, 1
    with pytest.raises(RemoteError):
        upload(remote, src, sha)
    proxy.mode = "pass"


@pytest.mark.parametrize("change", ["bytes", "size", "bytes-same-time"])
def test_a_partial_upload_someone_changed_is_started_over(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path, change: str
) -> None:
    """The temporary file is altered between the cut and the next try (bytes changed in
    its prefix, its size changed, bytes changed with its time put back): not resumed, sent
    again whole; the delivered file is the source's."""
    folder = sshd.folder(f"resume-up-{change}")
    src, sha = source(tmp_path)
    remote = through(sshd, proxy, folder, tmp_path)
    remote.list()
    try:
        cut_once(remote, proxy, src, sha)
        partial = folder / TEMP
        before = partial.stat()
        assert before.st_size > MIN_RESUME + MARGIN
        with open(partial, "r+b") as fh:
            if change == "size":
                fh.truncate(before.st_size // 2)
            else:
                # Where the resume's read-back looks: just below the kept prefix.
                fh.seek(before.st_size - 2 * MARGIN)
                fh.write(b"\0" * MARGIN)
        if change == "bytes-same-time":
            os.utime(partial, ns=(before.st_atime_ns, before.st_mtime_ns))
        with structlog.testing.capture_logs() as logs:
            upload(remote, src, sha)
    finally:
        remote.close()
    assert events(logs, "remote.resumed") == []
    assert len(events(logs, "remote.resume_refused")) == 1, said(logs)
    assert hashlib.sha256((folder / "big.bin").read_bytes()).hexdigest() == sha


def test_a_changed_source_is_not_resumed_onto(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path
) -> None:
    """The next try sends other content under the same temporary name: the partial is
    another content's, not resumed; the new content is delivered whole."""
    folder = sshd.folder("resume-up-source")
    src, sha = source(tmp_path)
    remote = through(sshd, proxy, folder, tmp_path)
    remote.list()
    try:
        cut_once(remote, proxy, src, sha)
        other, other_sha = source(tmp_path, "other.bin")
        with structlog.testing.capture_logs() as logs:
            upload(remote, other, other_sha)
    finally:
        remote.close()
    assert events(logs, "remote.resumed") == []
    refused = events(logs, "remote.resume_refused")
    assert len(refused) == 1 and "another content" in str(refused[0]["reason"])
    assert hashlib.sha256((folder / "big.bin").read_bytes()).hexdigest() == other_sha


def download(remote: SFTPRemote, scratch: Path) -> str:
    with remote.local_copy("big.bin", scratch) as path:
        return hashlib.sha256(path.read_bytes()).hexdigest()


#: paramiko's prefetch thread, whose connection is cut under it, ends with an EOFError of
#: its own (the download itself fails with ConnectionLost, as it should).
PREFETCH_CUT = pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")


@pytest.mark.parametrize(
    "accelerate_mb",
    [1, pytest.param(0, marks=PREFETCH_CUT)],
    ids=["openssh", "paramiko"],
)
def test_a_download_cut_three_times_resumes_and_gives_the_same_bytes(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path, accelerate_mb: int
) -> None:
    """Each cut leaves the partial download and its record in the scratch folder; each
    next try proves the partial (the remote file unchanged, the kept bytes' sha256) and
    reads the rest: the whole file, the same bytes, nothing left in scratch. (Bigger
    steps than the uploads': paramiko reads far ahead of what it has written, and what
    it holds is lost with the connection.)"""
    folder = sshd.folder(f"resume-down-{accelerate_mb}")
    src, sha = source(tmp_path, size=64 << 20)
    (folder / "big.bin").write_bytes(src.read_bytes())
    remote = through(sshd, proxy, folder, tmp_path)
    remote.cfg = remote.cfg.model_copy(update={"accelerate_mb": accelerate_mb})
    scratch = tmp_path / "downloads"
    # (paramiko's own session is cut too when it reads the file)
    proxy.mode, proxy.limit, proxy.cuts, proxy.count = "drop_after", 16 << 20, 3, "down"
    try:
        with structlog.testing.capture_logs() as logs:
            got, failed = tries(lambda: download(remote, scratch))
    finally:
        remote.close()
    assert (failed, proxy.cut) == (3, 3)
    resumed = len(events(logs, "remote.resumed"))
    if accelerate_mb:
        assert resumed == 3, said(logs)
    else:
        # paramiko's session may be found dead only at the next look (a try lost without
        # a resume), and what it had read ahead but not written is lost with the cut (a
        # partial under 4 MiB starts over): at least one resume, whatever the load.
        assert resumed >= 1, said(logs)
    assert events(logs, "remote.resume_refused") == [], said(logs)
    assert got == sha
    assert os.listdir(scratch) == []


@pytest.mark.parametrize("change", ["remote", "partial"])
def test_a_download_is_started_over_when_the_file_or_its_partial_changed(
    sshd: SshServer, proxy: FaultProxy, tmp_path: Path, change: str
) -> None:
    """After a cut, the remote file is rewritten (another size and time), or the partial
    download's bytes are changed: not resumed; the file is read again whole, as it is
    now."""
    folder = sshd.folder(f"resume-down-{change}")
    src, _ = source(tmp_path)
    (folder / "big.bin").write_bytes(src.read_bytes())
    remote = through(sshd, proxy, folder, tmp_path)
    remote.list()
    scratch = tmp_path / "downloads"
    proxy.mode, proxy.limit, proxy.cuts, proxy.count = "drop_after", EVERY, 1, "down"
    try:
        with pytest.raises(RemoteError):
            download(remote, scratch)
        (partial,) = scratch.glob("*-big.bin.download")
        assert partial.stat().st_size >= MIN_RESUME
        if change == "remote":
            other, _ = source(tmp_path, "other.bin")
            (folder / "big.bin").write_bytes(other.read_bytes() + b"grown")
        else:
            with open(partial, "r+b") as fh:
                fh.seek(4096)
                fh.write(b"\1" * 4096)
        with structlog.testing.capture_logs() as logs:
            got = download(remote, scratch)
    finally:
        remote.close()
    assert events(logs, "remote.resumed") == []
    assert len(events(logs, "remote.resume_refused")) == 1, said(logs)
    assert got == hashlib.sha256((folder / "big.bin").read_bytes()).hexdigest()
