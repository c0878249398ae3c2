"""Big files through OpenSSH's own client when the server's SFTP process stops answering
while the SSH connection stays up, and when xchange has to exit at once mid-upload: the
client is ended, nothing is left hanging or writing, the file is tried again.

The test sshd's SFTP subsystem is a wrapper that records the pid of each session's real
``sftp-server`` (it execs it), so a test can stop (SIGSTOP) or kill that one process while
sshd, and the SSH connection, stay up. Only 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import Exchange
from tests.daemons import daemon
from tests.procs import wait_for, xchange_argv, xchange_env
from tests.sftp_routes import copy_with_partner, endpoint
from tests.sshd import SshServer, start_sshd
from xchange.config import Timeouts
from xchange.errors import RemoteError
from xchange.remote.sftp import SFTPRemote

pytestmark = pytest.mark.sftp

SFTP_SERVER = "/usr/lib/openssh/sftp-server"
#: The operation timeout of these tests' endpoints: how long the file may stand still.
OPERATION = 2
BIG = 64 << 20


@pytest.fixture(scope="module")
def server() -> Iterator[SshServer]:
    """An sshd whose SFTP subsystem records each session's sftp-server pid in ``pids``."""
    if not os.access(SFTP_SERVER, os.X_OK):
        pytest.fail(f"{SFTP_SERVER} is missing: apt-get install openssh-sftp-server")
    base = Path(tempfile.mkdtemp(prefix="xchange-openssh-faults-"))
    wrapper = base / "sftp-subsystem"
    wrapper.write_text(f'#!/bin/sh\necho $$ >> {base / "pids"}\nexec {SFTP_SERVER} "$@"\n')
    wrapper.chmod(0o755)
    sshd = start_sshd(base, subsystem=str(wrapper))
    yield sshd
    for pid in session_pids(sshd):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # a stopped one too
    end_clients(sshd)
    sshd.stop()
    shutil.rmtree(base, ignore_errors=True)


def session_pids(sshd: SshServer) -> list[int]:
    """The sftp-server processes the sessions of ``sshd`` ran, oldest first."""
    pids = sshd.base / "pids"
    return [int(p) for p in pids.read_text().split()] if pids.exists() else []


def processes() -> Iterator[tuple[int, int, str, str]]:
    """(pid, parent pid, state, command line) of every process."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        yield int(entry), int(ppid), state, argv.replace(b"\0", b" ").decode(errors="replace")


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie does not: nothing reaps orphans here)."""
    return any(p == pid and state != "Z" for p, _, state, _ in processes())


def clients(sshd: SshServer) -> list[str]:
    """The OpenSSH clients (sftp and its ssh) still running with this server's key."""
    key = str(sshd.client_key)
    return [f"{pid} {cmd}" for pid, _, state, cmd in processes() if key in cmd and state != "Z"]


def end_clients(sshd: SshServer) -> None:
    """Kill what :func:`clients` finds (after a test that failed by hanging)."""
    for line in clients(sshd):
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(line.split()[0]), signal.SIGKILL)


def open_files(pid: int) -> list[str]:
    folder = f"/proc/{pid}/fd"
    with contextlib.suppress(OSError):
        return [os.readlink(f"{folder}/{fd}") for fd in os.listdir(folder)]
    return []


@contextlib.contextmanager
def sabotage(sshd: SshServer, pick: Callable[[int], bool], signum: int) -> Iterator[list[int]]:
    """Send ``signum``, once, to the first of the sftp-server processes that ``pick``
    accepts; yields the pids it signalled."""
    done: list[int] = []
    cancel = threading.Event()

    def watch() -> None:
        end = time.monotonic() + 60
        while time.monotonic() < end and not cancel.is_set():
            for pid in session_pids(sshd):
                if pick(pid):
                    os.kill(pid, signum)
                    done.append(pid)
                    return
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield done
    finally:
        cancel.set()
        thread.join(timeout=5)


def holding(path_is: Callable[[str], bool]) -> Callable[[int], bool]:
    """Whether a process has a file open whose path ``path_is`` accepts."""
    return lambda pid: any(path_is(path) for path in open_files(pid))


def uploading(folder: Path) -> Callable[[int], bool]:
    """Whether a process has the hidden temporary name of big.bin in ``folder`` open (not
    the rename probe's hidden files)."""
    return holding(
        lambda path: path.startswith(f"{folder}/.big.bin.") and path.endswith("xchange-part")
    )


def within(seconds: float, sshd: SshServer, work: Callable[[], object]) -> BaseException | None:
    """Run ``work`` in a thread; the exception it raised, None if it returned. Fails if it
    is still running after ``seconds`` (killing the clients it waits for, so that the
    failure is reported instead of hanging)."""
    raised: list[BaseException | None] = []

    def run() -> None:
        try:
            work()
            raised.append(None)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout=seconds)
    if thread.is_alive():
        end_clients(sshd)
        thread.join(timeout=10)
        pytest.fail(f"still running after {seconds} s: the OpenSSH client hung")
    return raised[0]


def short_timeouts(sshd: SshServer, folder: Path) -> SFTPRemote:
    cfg = endpoint(
        sshd,
        folder,
        accelerate_mb=1,
        timeouts=Timeouts(connect=2, banner=2, auth=2, operation=OPERATION),
    )
    return SFTPRemote("wms", cfg)


def put_file(remote: SFTPRemote, src: Path) -> None:
    with open(src, "rb") as fh:
        remote.put_atomic(
            src.name,
            fh,
            src.stat().st_size,
            temp_name=f".{src.name}.t.xchange-part",
            overwrite=False,
        )


@pytest.mark.parametrize("signum", [signal.SIGSTOP, signal.SIGKILL], ids=["stopped", "killed"])
def test_an_upload_whose_sftp_process_stops_or_dies_fails_retryable_and_the_next_try_delivers(
    server: SshServer, tmp_path: Path, signum: int
) -> None:
    """The server's sftp-server is stopped or killed once the upload has begun, the SSH
    connection up: the upload ends within the operation timeout with a retryable error
    (before: it hung for ever), no client is left running, the temporary name is removed;
    the next try, on a new session, delivers the file whole."""
    folder = server.folder(f"upload-{signal.Signals(signum).name}")
    payload = os.urandom(BIG)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    remote = short_timeouts(server, folder)
    try:
        remote.list()  # paramiko's own session first: the saboteur spares it
        with sabotage(server, uploading(folder), signum) as hit:
            started = time.monotonic()
            error = within(60, server, lambda: put_file(remote, src))
            took = time.monotonic() - started
        assert hit, "the upload ended before its sftp-server could be signalled"
        assert isinstance(error, RemoteError) and error.retryable, repr(error)
        if signum == signal.SIGSTOP:
            assert f"no progress for {OPERATION} s" in str(error)
            assert "the server's SFTP process may have stopped" in str(error)
        assert took < OPERATION + 10
        assert clients(server) == []
        assert os.listdir(folder) == []  # the temporary name removed, nothing else there
        put_file(remote, src)
    finally:
        remote.close()
    assert os.listdir(folder) == ["big.bin"]
    assert (folder / "big.bin").read_bytes() == payload


def test_an_upload_whose_sftp_session_never_answers_ends_after_the_login_timeouts(
    server: SshServer, tmp_path: Path
) -> None:
    """The sftp-server of the client's session is stopped as it starts: no SFTP session,
    the file never opened. The upload ends once the login's timeouts and the operation
    timeout have passed, with a retryable error saying so; nothing is left running."""
    folder = server.folder("upload-never")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(2 << 20))
    remote = short_timeouts(server, folder)
    try:
        remote.list()
        known = set(session_pids(server))  # paramiko's session: spared
        with sabotage(server, lambda pid: pid not in known, signal.SIGSTOP) as hit:
            started = time.monotonic()
            error = within(60, server, lambda: put_file(remote, src))
            took = time.monotonic() - started
    finally:
        remote.close()
    assert hit
    assert isinstance(error, RemoteError) and error.retryable, repr(error)
    login = 2 + 2 + 2 + OPERATION  # connect, banner, auth, operation
    if "no SFTP session" in str(error):
        assert f"no SFTP session within {login} s" in str(error)
        assert login <= took < login + 10
    else:  # the session came up (the file opened) just before its server stopped
        assert f"no progress for {OPERATION} s" in str(error), str(error)
        assert OPERATION <= took < login + 10
    assert clients(server) == []
    assert os.listdir(folder) == []


def configure(
    exchange: Exchange,
    sshd: SshServer,
    folder: Path,
    *,
    pickup: bool = False,
    port: int | None = None,
    operation: float = OPERATION,
    daemon_section: str = "",
) -> None:
    """A "copy" route of ``*.bin`` files between the local folders and an SFTP endpoint
    ``partner`` (its target, or with ``pickup`` its source) on ``port`` (sshd's own or a
    relay's, whose host key is pinned for it too)."""
    copy_with_partner(
        exchange,
        sshd,
        folder,
        port=port,
        pickup=pickup,
        login=2,
        operation=operation,
        daemon_section=daemon_section,
    )


def run_once(
    exchange: Exchange, sshd: SshServer, seconds: float
) -> subprocess.CompletedProcess[str]:
    """``xchange run --once --route copy`` as its own process, ended (and failed) if it
    runs longer than ``seconds``."""
    try:
        return subprocess.run(
            xchange_argv(exchange.config, "run", "--once", "--route", "copy"),
            env=xchange_env(),
            capture_output=True,
            text=True,
            timeout=seconds,
            check=False,
        )
    except subprocess.TimeoutExpired:
        end_clients(sshd)
        pytest.fail(f"run --once still running after {seconds} s: the OpenSSH client hung")


def test_a_stalled_openssh_upload_is_tried_again_within_the_run_and_delivered_once(
    exchange: Exchange, server: SshServer
) -> None:
    """Through the whole run: the first try stalls (its sftp-server stopped), is ended
    after the operation timeout and its temporary name removed; the route's retry sends the
    file again on a new session and it is delivered once, whole."""
    folder = server.folder("upload-run")
    configure(exchange, server, folder)
    payload = os.urandom(BIG)
    (exchange.inbox / "big.bin").write_bytes(payload)
    with sabotage(server, uploading(folder), signal.SIGSTOP) as hit:
        started = time.monotonic()
        result = run_once(exchange, server, 90)
        took = time.monotonic() - started
    assert hit
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert f"no progress for {OPERATION} s" in result.stderr  # the retry's reason
    assert took < OPERATION + 30
    assert os.listdir(folder) == ["big.bin"]
    assert (folder / "big.bin").read_bytes() == payload
    assert not (exchange.inbox / "big.bin").exists()
    assert clients(server) == []


def test_a_stalled_openssh_download_is_ended_and_the_file_taken_at_the_next_run(
    exchange: Exchange, server: SshServer
) -> None:
    """A pickup from an SFTP drop: the sftp-server reading the file is stopped mid-way.
    The download ends after the operation timeout (before: it hung for ever), its partial
    local copy removed, the file left in the drop (retry later, exit 3); the next run takes
    it and delivers it whole."""
    drop = server.folder("download-run")
    configure(exchange, server, drop, pickup=True)
    payload = os.urandom(BIG)
    source = drop / "big.bin"
    source.write_bytes(payload)
    source.chmod(0o666)
    with sabotage(server, holding(lambda path: path == str(source)), signal.SIGSTOP) as hit:
        started = time.monotonic()
        stalled = run_once(exchange, server, 90)
        took = time.monotonic() - started
    assert hit
    assert stalled.returncode == 3, stalled.stdout + stalled.stderr[-3000:]
    assert "retry-later" in stalled.stdout
    assert f"no progress for {OPERATION} s" in stalled.stdout + stalled.stderr
    assert took < OPERATION + 30
    assert clients(server) == []
    downloads = exchange.journal.parent / "scratch" / "downloads"
    assert list(downloads.iterdir()) == []  # the partial copy removed
    assert source.read_bytes() == payload
    assert not (exchange.outbox / "big.bin").exists()
    healed = run_once(exchange, server, 90)
    assert healed.returncode == 0, healed.stdout + healed.stderr[-3000:]
    assert (exchange.outbox / "big.bin").read_bytes() == payload
    assert not source.exists()


class SlowLink:
    """A TCP relay on 127.0.0.1 to sshd that carries at most ``rate`` bytes a second
    towards it on each connection (a slow uplink)."""

    def __init__(self, upstream_port: int, rate: int) -> None:
        self.upstream_port = upstream_port
        self.rate = rate
        self.sockets: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        for s in [self.listener, *self.sockets]:
            with contextlib.suppress(OSError):
                s.close()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            upstream.settimeout(None)
            self.sockets += [client, upstream]
            for src, dst, rate in ((client, upstream, self.rate), (upstream, client, 0)):
                threading.Thread(target=self._pump, args=(src, dst, rate), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, rate: int) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
                if rate:
                    time.sleep(len(data) / rate)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def sftp_children(pid: int) -> list[int]:
    """The OpenSSH clients ``pid`` started, and the ``ssh`` each of them started."""
    found = [p for p, ppid, _, cmd in processes() if ppid == pid and cmd.startswith("sftp ")]
    return found + [p for p, ppid, _, _ in processes() if ppid in found]


def hidden_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("."))


def test_a_second_sigterm_ends_the_openssh_upload_and_says_so(
    exchange: Exchange, server: SshServer
) -> None:
    """The daemon is uploading a big file through OpenSSH's client over a slow link: two
    SIGTERMs make it exit at once, with an ``exit_now`` line naming the file in hand, and
    the client and its ssh end with it: the hidden file stops growing (before: the exit
    was silent and the client went on uploading after xchange had gone)."""
    folder = server.folder("exit-now")
    link = SlowLink(server.port, rate=4 << 20)
    try:
        configure(
            exchange,
            server,
            folder,
            port=link.port,
            operation=30,
            daemon_section="[daemon]\npoll_interval = 0.5\n\n",
        )
        (exchange.inbox / "big.bin").write_bytes(os.urandom(BIG))
        with daemon(exchange) as proc:
            wait_for(lambda: hidden_size(folder) > 2 << 20, 60, "the upload under way")
            children = sftp_children(proc.pid)
            assert len(children) == 2, children  # sftp and its ssh
            proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=15) == 128 + signal.SIGTERM
        lines = (exchange.root / "daemon.log").read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        (exit_now,) = [e for e in events if e["event"] == "exit_now"]
        assert exit_now["signal"] == "SIGTERM"
        assert "big.bin" in " ".join(exit_now["in_hand"])
        # How far the upload got, not how far the file was read (hashed) before it.
        assert "uploading big.bin: " in " ".join(exit_now["in_hand"]), exit_now["in_hand"]
        assert "% read" not in " ".join(exit_now["in_hand"])
        assert exit_now["openssh_clients_ended"] == 1
        assert [pid for pid in children if alive(pid)] == []
        assert clients(server) == []
        # What was in flight on the slow link when the client died still lands; then
        # nothing writes the file any more.
        settled = time.monotonic() + 10
        size = -1
        while hidden_size(folder) != size and time.monotonic() < settled:
            size = hidden_size(folder)
            time.sleep(0.5)
        time.sleep(1.5)
        assert hidden_size(folder) == size < BIG
    finally:
        end_clients(server)
        link.stop()
