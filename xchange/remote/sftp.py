"""A folder on an SFTP server, through paramiko (the only module that imports it).

Security: the server's host key must be in the configured known_hosts file; an
unknown or changed key is refused (``RejectPolicy``), never added. Passwords and
passphrases come from the configuration's secrets and never appear in messages.

Reliability: every phase has a timeout (connect, banner, auth, channel, and each
SFTP operation through the channel timeout). After a connection-level failure the
session is dropped, so the next call reconnects. An ``SFTPRemote`` must be used by
one thread at a time: paramiko's SFTPClient is not safe to share.

Speed: the TCP connection is opened here with TCP_NODELAY; the ``*_many`` operations
(batches of small files) write SFTP packets straight to the session's channel, many files
in flight (``_Pipeline``); files of ``accelerate_mb`` and more go through OpenSSH's client.
"""

from __future__ import annotations

import builtins
import errno
import itertools
import posixpath
import socket
import stat as stat_mod
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
import structlog

from xchange.config import SFTPEndpoint
from xchange.errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTimeout,
    RemoteUnavailable,
    TargetExists,
)
from xchange.faults import checkpoint
from xchange.remote import openssh
from xchange.remote.base import FileInfo, SmallPut, is_temporary, safe_subfolder

log = structlog.get_logger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a key."""
    return str(key.fingerprint)


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class SFTPRemote:
    """One SFTP endpoint; connects lazily and reconnects after a lost session."""

    def __init__(self, label: str, cfg: SFTPEndpoint) -> None:
        self.label = label
        self.cfg = cfg
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        self._posix_rename = True

    # ------------------------------------------------------------------ connection

    def _where(self) -> str:
        return f"{self.label} ({self.cfg.user}@{self.cfg.host}:{self.cfg.port})"

    def _connect(self) -> paramiko.SFTPClient:
        cfg = self.cfg
        client = paramiko.SSHClient()
        try:
            client.load_host_keys(str(cfg.known_hosts))
        except FileNotFoundError:
            raise HostKeyUnknown(
                f"{self._where()}: known_hosts file {cfg.known_hosts} does not exist; "
                f"run `xchange trust {self.label}` to check the server's fingerprint and pin it"
            ) from None
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        kwargs: dict[str, Any] = {
            "hostname": cfg.host,
            "port": cfg.port,
            "username": cfg.user,
            "timeout": cfg.timeouts.connect,
            "banner_timeout": cfg.timeouts.banner,
            "auth_timeout": cfg.timeouts.auth,
            "channel_timeout": cfg.timeouts.operation,
            "allow_agent": False,
            "look_for_keys": False,
        }
        if cfg.key_file is not None:
            kwargs["key_filename"] = str(cfg.key_file)
        if cfg.key_passphrase is not None:
            kwargs["passphrase"] = cfg.key_passphrase.get_secret_value()
        if cfg.password is not None:
            kwargs["password"] = cfg.password.get_secret_value()
        try:
            with self._errors("connect"):
                kwargs["sock"] = self._socket()
                client.connect(**kwargs)
                transport = client.get_transport()
                if transport is not None and cfg.keepalive:
                    transport.set_keepalive(cfg.keepalive)
                sftp = client.open_sftp()
                channel = sftp.get_channel()
                if channel is not None:
                    channel.settimeout(cfg.timeouts.operation)
        except BaseException:
            client.close()
            raise
        self._ssh, self._sftp = client, sftp
        log.info("remote.connected", endpoint=self.label, host=cfg.host, port=cfg.port)
        return sftp

    def _socket(self) -> socket.socket:
        """The TCP connection, without Nagle's delay: SSH messages are small and each waits
        for an answer, so holding one back for the previous one's acknowledgement costs a
        delayed ACK (40 ms) per exchange (the login alone had two)."""
        where = f"{self._where()}: connect"
        try:
            sock = socket.create_connection(
                (self.cfg.host, self.cfg.port), timeout=self.cfg.timeouts.connect
            )
        except socket.gaierror:
            raise RemoteUnavailable(f"{where}: cannot resolve {self.cfg.host}") from None
        except TimeoutError:
            raise RemoteTimeout(f"{where}: no answer within the configured timeout") from None
        except OSError as exc:  # refused, unreachable, ...
            reason = (exc.strerror or type(exc).__name__).lower()
            raise RemoteUnavailable(f"{where}: {reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def _client(self) -> paramiko.SFTPClient:
        if self._sftp is not None and self._ssh is not None:
            transport = self._ssh.get_transport()
            if transport is not None and transport.is_active():
                return self._sftp
            self.close()
        return self._connect()

    def connect(self) -> None:
        self._client()

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        """Map paramiko and socket errors to xchange's error tree."""
        where = f"{self._where()}: {what}"
        try:
            yield
        except RemoteError:
            raise
        except paramiko.BadHostKeyException as exc:
            self.close()
            raise HostKeyMismatch(
                f"{where}: the server's host key has CHANGED (it offers "
                f"{exc.key.get_name()} {fingerprint(exc.key)}, known_hosts has "
                f"{fingerprint(exc.expected_key)}). This can be an attack. If the partner "
                f"really replaced the key, confirm the new fingerprint with them, then run "
                f"`xchange trust {self.label}`."
            ) from None
        except paramiko.AuthenticationException:
            self.close()
            raise AuthenticationFailed(
                f"{where}: the server refused the login for user {self.cfg.user!r}; "
                f"check the key file or the password variable"
            ) from None
        except paramiko.SSHException as exc:
            self.close()
            text = str(exc)
            if "not found in known_hosts" in text:
                raise HostKeyUnknown(
                    f"{where}: the server's host key is not in {self.cfg.known_hosts}; "
                    f"run `xchange trust {self.label}` to check its fingerprint and pin it"
                ) from None
            if "timeout" in text.lower() or "timed out" in text.lower():
                raise RemoteTimeout(f"{where}: {text}") from None
            raise ConnectionLost(f"{where}: {text}") from None
        except TimeoutError:
            self.close()
            raise RemoteTimeout(f"{where}: no answer within the configured timeout") from None
        except paramiko.ssh_exception.NoValidConnectionsError:
            self.close()
            raise RemoteUnavailable(f"{where}: connection refused") from None
        except (EOFError, ConnectionError) as exc:
            self.close()
            raise ConnectionLost(f"{where}: connection lost ({type(exc).__name__})") from None
        except FileNotFoundError:
            raise RemoteNotFound(f"{where}: no such file or folder") from None
        except PermissionError:
            raise RemotePermissionDenied(f"{where}: permission denied") from None
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                self.close()
                raise RemoteUnavailable(f"{where}: {exc.strerror}") from None
            if isinstance(exc, socket.gaierror):
                raise RemoteUnavailable(f"{where}: cannot resolve {self.cfg.host}") from None
            if self._ssh is not None and not self._alive():
                self.close()
                raise ConnectionLost(f"{where}: connection lost") from None
            # SFTP's generic "Failure": disk full, quota, a server-side problem.
            raise RemoteUnavailable(f"{where}: the server reported: {exc}") from None

    def _alive(self) -> bool:
        transport = self._ssh.get_transport() if self._ssh else None
        return bool(transport and transport.is_active())

    def _path(self, name: str) -> str:
        return posixpath.join(self.cfg.path, safe_subfolder(name))

    # ------------------------------------------------------------------ operations

    def list(self, *, recursive: bool = False, skip_dirs: tuple[str, ...] = ()) -> list[FileInfo]:
        sftp = self._client()
        out: list[FileInfo] = []
        # One READDIR per folder returns names with attributes: no stat per file.
        folders = [("", self.cfg.path)]
        while folders:
            prefix, folder = folders.pop()
            with self._errors(f"list {folder}"):
                entries = sftp.listdir_attr(folder)
            for e in entries:
                if e.st_mode is None or is_temporary(e.filename):
                    continue
                name = prefix + e.filename
                if stat_mod.S_ISREG(e.st_mode):
                    mtime = int(e.st_mtime or 0) * 1_000_000_000
                    out.append(FileInfo(name, e.st_size or 0, mtime))
                elif (
                    recursive
                    and stat_mod.S_ISDIR(e.st_mode)
                    and not (not prefix and e.filename in skip_dirs)
                ):
                    folders.append((name + "/", posixpath.join(folder, e.filename)))
        return sorted(out, key=lambda f: (f.mtime_ns, f.name))

    def _accelerated(self, size: int) -> bool:
        return openssh.available(self.cfg) and size >= self.cfg.accelerate_mb * 1024 * 1024

    def download(self, name: str, dest: BinaryIO) -> int:
        sftp = self._client()
        target = getattr(dest, "name", None)
        if isinstance(target, str) and Path(target).is_file():
            info = self.stat(name)
            if info is not None and self._accelerated(info.size):
                openssh.transfer(self.cfg, self._where(), "get", Path(target), self._path(name))
                dest.seek(0, 2)
                return info.size
        with self._errors(f"read {name}"):
            # getfo prefetches with unbounded outstanding requests: a small cap is a cliff.
            return int(sftp.getfo(self._path(name), dest))

    @contextmanager
    def local_copy(self, name: str, scratch: Path) -> Iterator[Path]:
        scratch.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = scratch / f"{posixpath.basename(name)}.download"
        try:
            with open(path, "wb") as fh:
                self.download(name, fh)
            yield path
        finally:
            path.unlink(missing_ok=True)

    def stat(self, name: str) -> FileInfo | None:
        sftp = self._client()
        try:
            with self._errors(f"stat {name}"):
                st = sftp.stat(self._path(name))
        except RemoteNotFound:
            return None
        return FileInfo(name, st.st_size or 0, int(st.st_mtime or 0) * 1_000_000_000)

    def put_atomic(
        self, name: str, src: BinaryIO, size: int, *, temp_name: str, overwrite: bool
    ) -> FileInfo:
        sftp = self._client()
        final, temp = self._path(name), self._path(temp_name)
        # No look before the upload: without overwrite, the plain SFTP rename refuses an
        # existing name atomically, and that refusal is what raises TargetExists.
        try:
            local = getattr(src, "name", None)
            if isinstance(local, str) and Path(local).is_file() and self._accelerated(size):
                with self._errors(f"upload {name}"):
                    self._makedirs(sftp, posixpath.dirname(temp))
                openssh.transfer(self.cfg, self._where(), "put", Path(local), temp)
                sent = self.stat(temp_name)
                if sent is None or sent.size != size:
                    raise ConnectionLost(f"{self._where()}: {name}: the upload is incomplete")
            else:
                self._putfo(sftp, src, temp, size, name)
            checkpoint("before-rename")
            self._rename(sftp, temp, final, name, overwrite)
        except BaseException:
            self._discard(temp)
            raise
        info = self.stat(name)
        if info is None or info.size != size:
            raise ConnectionLost(
                f"{self._where()}: {name}: sent {size} bytes but the server shows "
                f"{'nothing' if info is None else info.size}"
            )
        return info

    def _putfo(
        self, sftp: paramiko.SFTPClient, src: BinaryIO, temp: str, size: int, name: str
    ) -> None:
        with self._errors(f"upload {name}"):
            try:
                # putfo pipelines its writes; confirm=True checks the size stored.
                sftp.putfo(src, temp, file_size=size, confirm=True)
            except FileNotFoundError:
                # The target folder is missing: create it and send again.
                self._makedirs(sftp, posixpath.dirname(temp))
                src.seek(0)
                sftp.putfo(src, temp, file_size=size, confirm=True)

    def _rename(
        self, sftp: paramiko.SFTPClient, temp: str, final: str, name: str, overwrite: bool
    ) -> None:
        if not overwrite:
            # Plain SFTP rename refuses an existing target: atomic and never overwrites.
            try:
                with self._errors(f"rename to {name}"):
                    sftp.rename(temp, final)
            except RemoteUnavailable:
                if self.stat(name) is not None:
                    raise TargetExists(f"{self._where()}: {name} already exists") from None
                raise
            return
        if self._posix_rename:
            try:
                sftp.posix_rename(temp, final)
                return
            except OSError:
                if not self._alive():
                    raise
                self._posix_rename = False
                log.warning(
                    "remote.rename_fallback",
                    endpoint=self.label,
                    reason="server lacks posix-rename; overwriting is not atomic",
                )
        with self._errors(f"replace {name}"):
            with suppress(FileNotFoundError):
                sftp.remove(final)
            sftp.rename(temp, final)

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        if not puts:
            return []
        sftp = self._client()
        with self._errors("create the target folders"):
            for folder in sorted({posixpath.dirname(self._path(p.temp_name)) for p in puts}):
                self._makedirs(sftp, folder)
        batch = _PipelinedPuts(self, self._channel(sftp), puts)
        return self._pipelined(batch, f"deliver {len(puts)} files")

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        if not files:
            return []
        batch = _PipelinedGets(self, self._channel(self._client()), files)
        return self._pipelined(batch, f"read {len(files)} files")

    def move_many(self, names: Sequence[str], folder: str) -> builtins.list[str | RemoteError]:
        if not names:
            return []
        sftp = self._client()
        sub = safe_subfolder(folder)
        dest_dir = posixpath.join(self.cfg.path, sub)
        with self._errors(f"archive into {sub}"):
            self._makedirs(sftp, dest_dir)
        batch = _PipelinedMoves(self, self._channel(sftp), names, sub)
        return self._pipelined(batch, f"archive {len(names)} files")

    def remove_many(self, names: Sequence[str]) -> builtins.list[RemoteError | None]:
        if not names:
            return []
        batch = _PipelinedRemoves(self, self._channel(self._client()), names)
        return self._pipelined(batch, f"remove {len(names)} files")

    def _channel(self, sftp: paramiko.SFTPClient) -> paramiko.Channel:
        channel = sftp.get_channel()
        if channel is None:
            self.close()
            raise ConnectionLost(f"{self._where()}: the SFTP session has no channel")
        return channel

    def _pipelined(self, batch: _Pipeline, what: str) -> builtins.list[Any]:
        """Run a pipeline; what the session's loss leaves unfinished carries that error."""
        try:
            with self._errors(what):
                batch.run(batch.jobs)
        except BaseException as exc:
            # Replies may still be on their way: the session cannot be reused.
            self.close()
            if not isinstance(exc, RemoteError):
                raise
            batch.fail_unfinished(exc)
        return batch.results

    def _discard(self, temp: str) -> None:
        if self._sftp is None or not self._alive():
            return
        with suppress(OSError, paramiko.SSHException, EOFError):
            self._sftp.remove(temp)

    def move(self, name: str, folder: str) -> str:
        sftp = self._client()
        sub = safe_subfolder(folder)
        dest_dir = posixpath.join(self.cfg.path, sub)
        with self._errors(f"archive {name}"):
            self._makedirs(sftp, dest_dir)
            dest_name = posixpath.basename(name)
            n = 1
            while self._exists(sftp, posixpath.join(dest_dir, dest_name)):
                dest_name = f"{posixpath.basename(name)}.{n}"
                n += 1
            sftp.rename(self._path(name), posixpath.join(dest_dir, dest_name))
        return posixpath.join(sub, dest_name)

    @staticmethod
    def _exists(sftp: paramiko.SFTPClient, path: str) -> bool:
        try:
            sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def _makedirs(self, sftp: paramiko.SFTPClient, path: str) -> None:
        if path in ("", ".", "/") or self._exists(sftp, path):
            return
        self._makedirs(sftp, posixpath.dirname(path))
        try:
            sftp.mkdir(path)
        except OSError:
            if not self._exists(sftp, path):
                raise

    def remove(self, name: str) -> None:
        sftp = self._client()
        try:
            with self._errors(f"remove {name}"):
                sftp.remove(self._path(name))
        except RemoteNotFound:
            pass

    # ------------------------------------------------------------------ trust

    def fetch_host_key(self) -> paramiko.PKey:
        """Connect far enough to see the server's host key, without logging in."""
        cfg = self.cfg
        with self._errors("fetch host key"):
            sock = socket.create_connection((cfg.host, cfg.port), timeout=cfg.timeouts.connect)
            transport = paramiko.Transport(sock)
            try:
                transport.banner_timeout = cfg.timeouts.banner
                transport.start_client(timeout=cfg.timeouts.banner)
                key = transport.get_remote_server_key()
            finally:
                transport.close()
        return key

    def pin_host_key(self, key: paramiko.PKey) -> None:
        """Add the key to the configured known_hosts file (created 0600 if missing)."""
        hosts = paramiko.HostKeys()
        path = self.cfg.known_hosts
        if path.exists():
            hosts.load(str(path))
        hosts.add(_host_entry(self.cfg.host, self.cfg.port), key.get_name(), key)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600, exist_ok=True)
        hosts.save(str(path))


#: Files of one batch in flight at once on the session, and the bytes of one read or
#: write request.
PIPELINE_FILES = 64
REQUEST_BYTES = 32768

# SFTP version 3 (draft-ietf-secsh-filexfer-02), the requests and replies put_many uses.
_OPEN, _CLOSE, _WRITE, _LSTAT, _REMOVE, _RENAME, _EXTENDED = 3, 4, 6, 7, 13, 18, 200
_STATUS, _HANDLE, _ATTRS = 101, 102, 105
_OK, _NO_SUCH_FILE, _PERMISSION_DENIED = 0, 2, 3
_OPEN_WRITE_CREATE_TRUNCATE = 0x02 | 0x08 | 0x10
_ATTR_SIZE = 0x01
_FRAME = struct.Struct(">IBI")  # length, type, request id
_U32, _U64 = struct.Struct(">I"), struct.Struct(">Q")


def _string(data: bytes) -> bytes:
    return _U32.pack(len(data)) + data


@dataclass(slots=True)
class _PutJob:
    """One file of a ``put_many`` and where it stands."""

    index: int
    put: SmallPut
    temp: bytes
    final: bytes
    handle: bytes = b""
    #: Requests of the current step without their reply yet.
    pending: int = 0
    error: RemoteError | None = None


class _Pipeline:
    """The requests of many files overlapped on one SFTP session.

    Up to ``PIPELINE_FILES`` files are in flight: the requests that the replies read so
    far call for go out together in one channel write, and replies are read as they come,
    many per read. paramiko's SFTP client sends one SSH message per request and reads
    each reply with two reads, which is most of the time of a small file; here the
    session's channel (``SFTPClient.get_channel()``) carries the SFTP packets directly.
    The client has no request of its own outstanding meanwhile (one thread uses a
    session), and any failure closes the session. Subclasses say what one file does:
    ``_open`` its first request, ``_step`` on each reply, ``_result`` when it is done.
    """

    #: The files, in order (set by subclasses).
    jobs: Sequence[Any]

    def __init__(self, remote: SFTPRemote, channel: paramiko.Channel, count: int) -> None:
        self.remote = remote
        self.channel = channel
        # A file counts as done only once its last reply says so.
        unconfirmed = ConnectionLost(f"{remote._where()}: the transfer was not confirmed")
        self.results: builtins.list[Any] = [unconfirmed] * count
        self.unfinished = set(range(count))
        #: Request id -> (job, step) for every request without its reply yet.
        self.waiting: dict[int, tuple[Any, Any]] = {}
        # Ids far from the ones paramiko's client counts up from 1.
        self.next_id = 0x40000000
        self.outgoing = bytearray()
        self.incoming = bytearray()

    def run(self, jobs: Sequence[Any]) -> None:
        queue = iter(jobs)
        for job in itertools.islice(queue, PIPELINE_FILES):
            self._open(job)
        while self.waiting:
            self._flush()
            for t, rid, body in self._replies():
                if rid not in self.waiting:
                    continue
                job, step = self.waiting.pop(rid)
                if self._step(job, step, t, body):
                    self.results[job.index] = self._result(job)
                    self.unfinished.discard(job.index)
                    nxt = next(queue, None)
                    if nxt is not None:
                        self._open(nxt)

    def fail_unfinished(self, exc: RemoteError) -> None:
        for index in self.unfinished:
            self.results[index] = exc

    def _open(self, job: Any) -> None:
        raise NotImplementedError

    def _step(self, job: Any, step: Any, t: int, body: memoryview) -> bool:
        raise NotImplementedError

    def _result(self, job: Any) -> Any:
        raise NotImplementedError

    # ------------------------------------------------------------------ wire

    def _send(self, job: Any, step: Any, t: int, *fields: bytes) -> None:
        rid = self.next_id
        self.next_id = (rid + 1) & 0xFFFFFFFF
        payload = b"".join(fields)
        self.outgoing += _FRAME.pack(len(payload) + 5, t, rid) + payload
        self.waiting[rid] = (job, step)

    def _flush(self) -> None:
        if self.outgoing:
            self.channel.sendall(bytes(self.outgoing))
            self.outgoing.clear()

    def _replies(self) -> builtins.list[tuple[int, int, memoryview]]:
        """The complete replies received (at least one; waits for it)."""
        while True:
            frames = []
            buf, pos = self.incoming, 0
            while len(buf) - pos >= 9:
                length, t, rid = _FRAME.unpack_from(buf, pos)
                if len(buf) - pos - 4 < length:
                    break
                frames.append((t, rid, memoryview(bytes(buf[pos + 9 : pos + 4 + length]))))
                pos += 4 + length
            del buf[:pos]
            if frames:
                return frames
            data = self.channel.recv(1 << 16)
            if not data:
                raise EOFError("the server closed the SFTP channel")
            self.incoming += data

    def _error(self, t: int, body: memoryview, what: str) -> RemoteError | None:
        where = f"{self.remote._where()}: {what}"
        if t != _STATUS:
            return RemoteUnavailable(f"{where}: unexpected reply {t}")
        (code,) = _U32.unpack_from(body)
        if code == _OK:
            return None
        if code == _NO_SUCH_FILE:
            return RemoteNotFound(f"{where}: no such file or folder")
        if code == _PERMISSION_DENIED:
            return RemotePermissionDenied(f"{where}: permission denied")
        text = ""
        if len(body) >= 8:
            (length,) = _U32.unpack_from(body, 4)
            text = bytes(body[8 : 8 + length]).decode("utf-8", "replace")
        return RemoteUnavailable(f"{where}: the server reported: {text or f'status {code}'}")


class _PipelinedPuts(_Pipeline):
    """Small uploads: each file open -> writes + close -> rename + size check."""

    def __init__(
        self,
        remote: SFTPRemote,
        channel: paramiko.Channel,
        puts: Sequence[SmallPut],
    ) -> None:
        super().__init__(remote, channel, len(puts))
        self.jobs = [
            _PutJob(
                i,
                p,
                remote._path(p.temp_name).encode("utf-8"),
                remote._path(p.name).encode("utf-8"),
            )
            for i, p in enumerate(puts)
        ]

    def _result(self, job: _PutJob) -> RemoteError | None:
        return job.error

    # ------------------------------------------------------------------ steps

    def _open(self, job: _PutJob) -> None:
        self._send(
            job,
            "open",
            _OPEN,
            _string(job.temp),
            _U32.pack(_OPEN_WRITE_CREATE_TRUNCATE),
            _U32.pack(0),  # no attributes
        )

    def _step(self, job: _PutJob, step: str, t: int, body: memoryview) -> bool:
        """Act on one reply; True when the job is finished (well or not)."""
        name = job.put.name
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, f"upload {name}")
                return True
            (length,) = _U32.unpack_from(body)
            job.handle = bytes(body[4 : 4 + length])
            # The writes and the close go together: a server answers requests on one
            # handle in the order they came.
            handle = _string(job.handle)
            data = job.put.data
            for offset in range(0, len(data), REQUEST_BYTES):
                chunk = data[offset : offset + REQUEST_BYTES]
                self._send(job, "write", _WRITE, handle, _U64.pack(offset), _string(chunk))
                job.pending += 1
            self._send(job, "close", _CLOSE, handle)
            job.pending += 1
            return False
        if step in ("write", "close"):
            job.pending -= 1
            job.error = job.error or self._error(t, body, f"upload {name}")
            if job.pending:
                return False
            if job.error is not None:
                self._send(job, "discard", _REMOVE, _string(job.temp))
                job.pending = 1
                return False
            # Renamed only once every byte and the close are acknowledged; the check of
            # the final name goes with it (an OpenSSH server answers in order; any other
            # order can only make the check fail, and the file is then sent again alone).
            checkpoint("before-rename")
            temp, final = _string(job.temp), _string(job.final)
            if job.put.overwrite:
                posix_rename = _string(b"posix-rename@openssh.com")
                self._send(job, "rename", _EXTENDED, posix_rename, temp, final)
            else:
                # Plain SFTP rename refuses an existing name: never overwrites.
                self._send(job, "rename", _RENAME, temp, final)
            self._send(job, "stat", _LSTAT, final)
            job.pending = 2
            return False
        if step == "rename":
            job.pending -= 1
            error = self._error(t, body, f"rename to {name}")
            if error is not None:
                job.error = error  # the rename's own error says more than the check's
                self._send(job, "discard", _REMOVE, _string(job.temp))
                job.pending += 1
            return not job.pending
        if step == "stat":
            job.pending -= 1
            if job.error is None:
                job.error = self._checked(t, body, job)
            return not job.pending
        # "discard": the temporary file is gone (or never was); job.error stands.
        job.pending -= 1
        return not job.pending

    def _checked(self, t: int, body: memoryview, job: _PutJob) -> RemoteError | None:
        """The error a stat reply of a delivered file shows (None: right size)."""
        name = job.put.name
        if t != _ATTRS:
            return self._error(t, body, f"check {name}") or RemoteUnavailable(
                f"{self.remote._where()}: check {name}: no attributes"
            )
        flags = _U32.unpack_from(body)[0]
        size = _U64.unpack_from(body, 4)[0] if flags & _ATTR_SIZE else None
        if size == len(job.put.data):
            return None
        return ConnectionLost(
            f"{self.remote._where()}: {name}: sent {len(job.put.data)} bytes but the "
            f"server shows {size}"
        )


_READ, _DATA, _EOF, _OPEN_READ = 5, 103, 1, 0x01


@dataclass(slots=True)
class _GetJob:
    """One file of a ``get_many`` and where it stands."""

    index: int
    name: str
    path: bytes
    size: int
    pending: int = 0
    chunks: dict[int, bytes] = field(default_factory=dict)
    error: RemoteError | None = None


class _PipelinedGets(_Pipeline):
    """Small downloads: each file open -> reads of its listed size, one read past its end
    (the server must answer end-of-file), close -- all sent together once it is open. A
    file whose size is not the listed one (it grew, shrank or a read came back short) is
    an error, and its caller reads it again the careful way."""

    def __init__(
        self, remote: SFTPRemote, channel: paramiko.Channel, files: Sequence[FileInfo]
    ) -> None:
        super().__init__(remote, channel, len(files))
        self.jobs = [
            _GetJob(i, f.name, remote._path(f.name).encode("utf-8"), f.size)
            for i, f in enumerate(files)
        ]

    def _open(self, job: _GetJob) -> None:
        self._send(job, "open", _OPEN, _string(job.path), _U32.pack(_OPEN_READ), _U32.pack(0))

    def _result(self, job: _GetJob) -> bytes | RemoteError:
        if job.error is not None:
            return job.error
        return b"".join(job.chunks[offset] for offset in sorted(job.chunks))

    def _changed(self, job: _GetJob) -> RemoteError:
        return RemoteUnavailable(
            f"{self.remote._where()}: {job.name}: not {job.size} bytes as listed (changed while "
            f"it was read)"
        )

    def _step(self, job: _GetJob, step: Any, t: int, body: memoryview) -> bool:
        what = f"read {job.name}"
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, what) or RemoteUnavailable(
                    f"{self.remote._where()}: {what}: no handle"
                )
                return True
            (length,) = _U32.unpack_from(body)
            handle = _string(bytes(body[4 : 4 + length]))
            for offset in range(0, job.size, REQUEST_BYTES):
                want = min(REQUEST_BYTES, job.size - offset)
                self._send(job, offset, _READ, handle, _U64.pack(offset), _U32.pack(want))
                job.pending += 1
            self._send(job, "end", _READ, handle, _U64.pack(job.size), _U32.pack(1))
            self._send(job, "close", _CLOSE, handle)
            job.pending += 2
            return False
        job.pending -= 1
        if step == "close":
            job.error = job.error or self._error(t, body, what)
        elif step == "end":
            if t == _DATA:
                job.error = job.error or self._changed(job)  # there is more than listed
            elif not self._at_end(t, body):
                job.error = job.error or self._error(t, body, what)
        elif t == _DATA:
            (length,) = _U32.unpack_from(body)
            data = bytes(body[4 : 4 + length])
            if len(data) != min(REQUEST_BYTES, job.size - step):
                job.error = job.error or self._changed(job)  # short: shrank, or a short read
            job.chunks[step] = data
        elif self._at_end(t, body):
            job.error = job.error or self._changed(job)  # ends before the listed size
        else:
            job.error = job.error or self._error(t, body, what)
        return not job.pending

    @staticmethod
    def _at_end(t: int, body: memoryview) -> bool:
        return t == _STATUS and _U32.unpack_from(body)[0] == _EOF


@dataclass(slots=True)
class _MoveJob:
    index: int
    name: str
    source: bytes
    dest: bytes
    place: str
    error: RemoteError | None = None


class _PipelinedMoves(_Pipeline):
    """Archive moves: one plain SFTP rename each (it refuses a name already taken)."""

    def __init__(
        self, remote: SFTPRemote, channel: paramiko.Channel, names: Sequence[str], sub: str
    ) -> None:
        super().__init__(remote, channel, len(names))
        dest_dir = posixpath.join(remote.cfg.path, sub)
        self.jobs = [
            _MoveJob(
                i,
                name,
                remote._path(name).encode("utf-8"),
                posixpath.join(dest_dir, posixpath.basename(name)).encode("utf-8"),
                posixpath.join(sub, posixpath.basename(name)),
            )
            for i, name in enumerate(names)
        ]

    def _open(self, job: _MoveJob) -> None:
        self._send(job, "rename", _RENAME, _string(job.source), _string(job.dest))

    def _step(self, job: _MoveJob, step: Any, t: int, body: memoryview) -> bool:
        job.error = self._error(t, body, f"archive {job.name}")
        return True

    def _result(self, job: _MoveJob) -> str | RemoteError:
        return job.error if job.error is not None else job.place


@dataclass(slots=True)
class _RemoveJob:
    index: int
    name: str
    path: bytes
    error: RemoteError | None = None


class _PipelinedRemoves(_Pipeline):
    """Deletes: one SFTP remove each (a file already gone is not an error)."""

    def __init__(self, remote: SFTPRemote, channel: paramiko.Channel, names: Sequence[str]) -> None:
        super().__init__(remote, channel, len(names))
        self.jobs = [
            _RemoveJob(i, name, remote._path(name).encode("utf-8")) for i, name in enumerate(names)
        ]

    def _open(self, job: _RemoveJob) -> None:
        self._send(job, "remove", _REMOVE, _string(job.path))

    def _step(self, job: _RemoveJob, step: Any, t: int, body: memoryview) -> bool:
        error = self._error(t, body, f"remove {job.name}")
        job.error = None if isinstance(error, RemoteNotFound) else error
        return True

    def _result(self, job: _RemoveJob) -> RemoteError | None:
        return job.error
