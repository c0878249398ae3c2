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
in flight (``Pipeline``); files of ``accelerate_mb`` and more go through OpenSSH's client.
"""

from __future__ import annotations

import builtins
import errno
import hashlib
import io
import os
import posixpath
import secrets
import socket
import stat as stat_mod
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import paramiko
import structlog

from xchange.config import SFTPEndpoint
from xchange.errors import (
    AuthenticationFailed,
    CannotVerify,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    RemoteNotFound,
    RemotePermissionDenied,
    RemoteTimeout,
    RemoteUnavailable,
    SourceChanged,
)
from xchange.lock import pid_alive
from xchange.private import private_folder
from xchange.remote import openssh
from xchange.remote.base import (
    DROP_MARK,
    HASHES,
    Capabilities,
    Check,
    DropOwner,
    FileInfo,
    SmallPut,
    Verify,
    check_for,
    hidden_name,
    safe_subfolder,
)
from xchange.remote.resume import (
    MARGIN,
    MIN_RESUME,
    REQUEST_BYTES,
    SETTLE,
    SPOT_BYTES,
    DownloadPartial,
    Partials,
    UploadPartial,
    forget_download,
    keep_download,
    resumable_download,
)
from xchange.remote.sftp_wire import (
    CHECK_FILE,
    GENERIC_FAILURE,
    LIST_START,
    STATVFS,
    FileHash,
    FreeSpace,
    Pipeline,
    PipelinedGets,
    PipelinedMoves,
    PipelinedPuts,
    PipelinedRemoves,
    Place,
    PutJob,
    ReadFolder,
    ServerTraits,
    extension_names,
    hello,
    said_failure,
)

log = structlog.get_logger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a key."""
    return str(key.fingerprint)


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


#: SFTP sessions this process opened, by endpoint (a worker's first, and each reconnect
#: after a lost session): the metrics read them through :func:`sessions_opened`.
_SESSIONS_OPENED: dict[str, int] = {}
_SESSIONS_LOCK = threading.Lock()


def sessions_opened() -> dict[str, int]:
    """SFTP sessions this process opened so far, by endpoint."""
    with _SESSIONS_LOCK:
        return dict(_SESSIONS_OPENED)


_TRAITS: dict[tuple[str, int, str], ServerTraits] = {}
_TRAITS_LOCK = threading.Lock()


class SFTPRemote:
    """One SFTP endpoint; connects lazily and reconnects after a lost session."""

    @classmethod
    def from_config(cls, label: str, cfg: SFTPEndpoint) -> SFTPRemote:
        """The remote for a configured endpoint of this kind."""
        return cls(label, cfg)

    @staticmethod
    def sessions_opened() -> dict[str, int]:
        """SFTP sessions this process opened so far, by endpoint."""
        return sessions_opened()

    def __init__(self, label: str, cfg: SFTPEndpoint) -> None:
        self.label = label
        self.cfg = cfg
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        #: Where the records of uploads cut short are kept; the last one cut.
        self.partials = Partials()
        self._cut: UploadPartial | None = None
        #: Replies the last listing of each folder had (the next one sends as many at once).
        self._folder_replies: dict[str, int] = {}
        with _TRAITS_LOCK:
            self.traits = _TRAITS.setdefault((cfg.host, cfg.port, cfg.user), ServerTraits())

    # ------------------------------------------------------------------ connection

    def place(self) -> Place:
        """This endpoint's folder as the wire protocol needs it."""
        return Place(self._where(), self.cfg.path, self.capabilities())

    def _bare_place(self) -> Place:
        """The folder for work that needs no capability (reading, removing, hashing, free
        space): nothing is probed for it (a rename probe lists the folder for stale
        probes first: seconds for a big drop folder over a slow link)."""
        return Place(self._where(), self.cfg.path)

    def _where(self) -> str:
        return f"{self.label} ({self.cfg.user}@{self.cfg.host}:{self.cfg.port})"

    def _connect(self) -> paramiko.SFTPClient:
        cfg = self.cfg
        client = paramiko.SSHClient()
        pinned = KnownHosts.read(cfg.known_hosts, self._where(), self.label)
        pinned.into(client.get_host_keys())
        client.set_missing_host_key_policy(_Refuse(pinned))
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
                transport = client.get_transport()
                assert transport is not None
                sftp = paramiko.SFTPClient.from_transport(transport)
                if sftp is None:
                    raise ConnectionLost(f"{self._where()}: no SFTP session")
                if not self.traits.hello:
                    # What the server offers, from its VERSION reply, on a channel of
                    # its own (once per process per server), opened after the session's
                    # own: a server allowing one session per connection keeps that one.
                    # A server that refuses a second channel, or answers it wrongly,
                    # offers nothing xchange may rely on: none of its extensions is used
                    # (said once), and the session goes on without them.
                    # A refusal (the channel refused, a wrong answer) is the server's
                    # word, kept; a passing fault (a timeout, a lost connection) leaves
                    # the question for the next session.
                    hi = None
                    answered = True
                    try:
                        hi = transport.open_session(timeout=cfg.timeouts.operation)
                        hi.settimeout(cfg.timeouts.operation)
                        hi.invoke_subsystem("sftp")
                        self.traits.extensions = hello(hi)
                    except (paramiko.SSHException, EOFError, ValueError, OSError) as exc:
                        answered = isinstance(exc, (paramiko.ChannelException, ValueError)) or (
                            isinstance(exc, paramiko.SSHException)
                            and transport.is_active()
                            and "timeout" not in str(exc).lower()
                        )
                        self.traits.extensions = {}
                        log.warning(
                            "remote.hello_failed",
                            endpoint=self.label,
                            reason=f"{type(exc).__name__}: {exc}",
                            then="no server extension is used on this server"
                            if answered
                            else "no server extension is used by this session; asked again "
                            "at the next",
                        )
                    finally:
                        if hi is not None:
                            hi.close()
                    self.traits.hello = answered
                channel = sftp.get_channel()
                if channel is not None:
                    channel.settimeout(cfg.timeouts.operation)
        except BaseException:
            client.close()
            raise
        self._ssh, self._sftp = client, sftp
        with _SESSIONS_LOCK:
            _SESSIONS_OPENED[self.label] = _SESSIONS_OPENED.get(self.label, 0) + 1
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
        except _RevokedKey as exc:
            self.close()
            raise HostKeyMismatch(
                f"{where}: the server offers {exc.key.get_name()} {fingerprint(exc.key)}, a key "
                f"{self.cfg.known_hosts} marks @revoked: refused. Ask the partner which key "
                f"is current, then run `xchange trust {self.label}`."
            ) from None
        except paramiko.BadHostKeyException as exc:
            self.close()
            if KnownHosts.read(self.cfg.known_hosts, where, self.label).is_revoked(exc.key):
                raise HostKeyMismatch(
                    f"{where}: the server offers {exc.key.get_name()} {fingerprint(exc.key)}, "
                    f"a key {self.cfg.known_hosts} marks @revoked: refused."
                ) from None
            # What to do first: a reason is cut at 300 characters in alerts and the journal.
            raise HostKeyMismatch(
                f"{where}: the server's host key has CHANGED: refused (this can be an attack). "
                f"If the partner really replaced the key, confirm the new fingerprint with "
                f"them, then run `xchange trust {self.label} --replace`. It offers "
                f"{exc.key.get_name()} {fingerprint(exc.key)}; known_hosts has "
                f"{fingerprint(exc.expected_key)}."
            ) from None
        except paramiko.AuthenticationException:
            self.close()
            raise AuthenticationFailed(
                f"{where}: the server refused the login for user {self.cfg.user!r}; "
                f"check the key file or the password variable"
            ) from None
        except _UnknownKey:
            self.close()
            raise HostKeyUnknown(
                f"{where}: the server's host key is not in {self.cfg.known_hosts}; "
                f"run `xchange trust {self.label}` to check its fingerprint and pin it"
            ) from None
        except paramiko.SSHException as exc:
            self.close()
            text = str(exc)
            # paramiko says a banner or authentication timeout only in its message.
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
            raise RemoteUnavailable(
                f"{where}: the server reported: {said_failure(str(exc))}"
            ) from None

    def _alive(self) -> bool:
        transport = self._ssh.get_transport() if self._ssh else None
        return bool(transport and transport.is_active())

    def _path(self, name: str) -> str:
        return posixpath.join(self.cfg.path, safe_subfolder(name))

    # ------------------------------------------------------------------ operations

    def list(
        self,
        *,
        recursive: bool = False,
        skip_dirs: tuple[str, ...] = (),
        keep: Callable[[str, int, int], bool] | None = None,
    ) -> list[FileInfo]:
        out: list[FileInfo] = []
        # READDIR replies carry names with attributes (no stat per file), many requests in
        # flight on the open folder (``ReadFolder``), each reply pruned as it comes.
        folders = [("", self.cfg.path)]
        while folders:
            prefix, folder = folders.pop()
            read = self._read_folder(folder, prefix, keep)
            out += read.files
            if recursive:
                folders += [
                    (f"{prefix}{sub}/", posixpath.join(folder, sub))
                    for sub in read.folders
                    if prefix or sub not in skip_dirs
                ]
        return sorted(out, key=lambda f: (f.mtime_ns, f.name))

    def _read_folder(
        self,
        folder: str,
        prefix: str = "",
        keep: Callable[[str, int, int], bool] | None = None,
        *,
        hidden: bool = False,
    ) -> ReadFolder:
        """One folder's entries (pipelined READDIR); a failure to read it raises."""
        # (A listing needs none of the server's capabilities: none are learned for it.)
        place = self._bare_place()
        channel = self._channel(self._client())
        # As many requests at once as the folder's last listing had replies with names
        # (and one for the end).
        start = self._folder_replies.get(folder, LIST_START)
        read = ReadFolder(place, channel, folder, prefix, keep, hidden=hidden, start=start)
        (error,) = self._pipelined(read, f"list {folder}")
        if error is not None:
            raise error
        self._folder_replies[folder] = read.named + 1
        if read.undecodable:
            log.warning(
                "remote.names_undecodable",
                endpoint=self.label,
                folder=folder,
                files=read.undecodable,
                reason="names that are not UTF-8 cannot be asked for by name over SFTP: "
                "they are left where they are (rename them to be taken)",
            )
        return read

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
        """A download into ``scratch``. A download cut short (a retryable error) leaves
        its partial and a record of it there; the next one of the same remote file
        resumes from it where it is proven to be that file's start (docs/resume.md)."""
        private_folder(scratch)
        # Named for this endpoint's file: another endpoint's (or sub-folder's) file of
        # the same name, taken at the same time, has a partial of its own.
        which = hashlib.sha256(f"{self.label}\0{name}".encode()).hexdigest()[:16]
        path = scratch / f"{which}-{posixpath.basename(name)}.download"
        # (A failure to look at the file leaves a partial of it as it is.)
        info = self.stat(name)
        kept = False
        try:
            if info is None:
                raise RemoteNotFound(f"{self._where()}: {name}: no such file")
            earlier = self._resumed(info, path)
            try:
                self._fetch(info, path, earlier.length if earlier else 0)
            except RemoteError as exc:
                kept = exc.retryable and keep_download(
                    self.label, name, info.size, info.mtime_ns, path, earlier
                )
                raise
            yield path
        finally:
            if not kept:
                path.unlink(missing_ok=True)
                forget_download(path)

    def _resumed(self, info: FileInfo, path: Path) -> DownloadPartial | None:
        """The record of a partial download of ``info`` in ``path`` proven to be its
        start (None: start over)."""
        record, why = resumable_download(self.label, info.name, info.size, info.mtime_ns, path)
        forget_download(path)
        if why:
            log.warning("remote.resume_refused", endpoint=self.label, file=info.name, reason=why)
        if record is not None:
            log.info(
                "remote.resumed",
                endpoint=self.label,
                file=info.name,
                offset=record.length,
                reason=f"{record.length:,} of {info.size:,} bytes proven in the partial download",
            )
        return record

    def _fetch(self, info: FileInfo, path: Path, offset: int) -> None:
        """Download ``info`` into ``path`` from ``offset`` (the bytes before it proven
        there; the remote file checked unchanged afterwards)."""
        name = info.name
        if self._accelerated(info.size):
            if not offset:
                path.write_bytes(b"")
            command = "reget" if offset else "get"
            openssh.transfer(self.cfg, self._where(), command, path, self._path(name))
        elif offset:
            with open(path, "r+b") as fh, self._errors(f"read {name}"):
                sftp = self._client()
                with sftp.open(self._path(name), "rb") as remote:
                    remote.seek(offset)
                    remote.prefetch(info.size)
                    fh.seek(offset)
                    while chunk := remote.read(1 << 20):
                        fh.write(chunk)
        else:
            with open(path, "wb") as fh, self._errors(f"read {name}"):
                self._client().getfo(self._path(name), fh)
        got = path.stat().st_size
        if not offset and got == info.size:
            return
        now = self.stat(name)
        if now is None or not info.same_file(now):
            if offset:
                raise SourceChanged(
                    f"{self._where()}: {name}: changed while its download was resumed; "
                    "read again from the start at the next look"
                )
            return  # (changed meanwhile: the caller sees another size)
        if got != info.size:
            raise ConnectionLost(
                f"{self._where()}: {name}: {got:,} of {info.size:,} bytes arrived; the "
                "rest at the next try"
            )

    def stat(self, name: str) -> FileInfo | None:
        sftp = self._client()
        try:
            with self._errors(f"stat {name}"):
                st = sftp.stat(self._path(name))
        except RemoteNotFound:
            return None
        return FileInfo(name, st.st_size or 0, int(st.st_mtime or 0) * 1_000_000_000)

    def put_atomic(
        self,
        name: str,
        src: BinaryIO,
        size: int,
        *,
        temp_name: str,
        overwrite: bool,
        mode: int | None = None,
        before_rename: Callable[[], None] | None = None,
        verify: Verify | None = None,
        sha256: str | None = None,
    ) -> FileInfo:
        sftp = self._client()
        self.learn_rename()
        check = self._check(verify, size, posixpath.dirname(self._path(temp_name)))
        put = SmallPut(name, b"", temp_name, overwrite, mode)
        local = getattr(src, "name", None)
        if isinstance(local, str) and Path(local).is_file() and self._accelerated(size):
            temp = self._path(temp_name)
            with self._errors(f"upload {name}"):
                self._makedirs(sftp, posixpath.dirname(temp))
            digest = None
            try:
                if check.way != "size":
                    # (OpenSSH's client sends it: hashed here from the same file.)
                    with open(local, "rb") as fh:
                        digest = hashlib.file_digest(fh, check.algorithm)
                self._send_big(name, Path(local), temp, size, sha256)
                if before_rename is not None:
                    before_rename()
            except RemoteError as exc:
                if not (exc.retryable and self._kept(temp)):
                    self._discard(temp)
                raise
            except BaseException:
                self._discard(temp)
                raise
            job = PutJob(0, put, size, None, uploaded=True, check=check, digest=digest)
        else:
            job = PutJob(0, put, size, src, before_rename=before_rename, check=check)
        error = self._put_jobs([job], f"upload {name}")[0]
        if isinstance(error, RemoteNotFound) and job.source is not None and job.opened is False:
            # The target folder is missing: create it and send again.
            with self._errors(f"upload {name}"):
                self._makedirs(self._client(), posixpath.dirname(self._path(temp_name)))
            src.seek(0)
            job = PutJob(0, put, size, src, before_rename=before_rename, check=check)
            error = self._put_jobs([job], f"upload {name}")[0]
        if job.halted is not None:
            raise job.halted
        if error is not None:
            raise self._with_room(error, size, posixpath.dirname(self._path(temp_name)))
        return FileInfo(name, size, job.mtime_ns)

    # ------------------------------------------------------------------ resuming

    def keep_partials(self, folder: Path) -> None:
        """Keep the records of uploads cut short in ``folder`` (private), so that a later
        process resumes them too (without it, only this process does)."""
        self.partials = Partials(folder)

    def _send_big(self, name: str, local: Path, temp: str, size: int, sha256: str | None) -> None:
        """Send a big file under ``temp`` through OpenSSH's client. With the content's
        ``sha256`` known, a partial a cut left is resumed where it is proven to be this
        content's (docs/resume.md), and a cut now leaves a record for the next try."""
        if sha256 is None:
            openssh.transfer(self.cfg, self._where(), "put", local, temp)
            return
        offset = self._resumable(name, local, temp, size, sha256)
        record = UploadPartial(self.label, temp, sha256, size, confirmed=offset)
        self.partials.save(record)
        try:
            openssh.transfer(
                self.cfg,
                self._where(),
                "reput" if offset else "put",
                local,
                temp,
                watch=record.saw,
            )
        except RemoteError as exc:
            if exc.retryable:
                self._cut = record
            else:
                self.partials.drop(record)
            raise
        except BaseException:
            self.partials.drop(record)
            raise
        self.partials.drop(record)

    def _kept(self, temp: str) -> bool:
        """After a cut: whether the partial under ``temp`` stays for the next try (its
        record kept, its size and time noted once they settle)."""
        record, self._cut = self._cut, None
        if record is None or record.temp != temp:
            return False
        left = self._settled(temp)
        if left is not None:
            record.left_size, record.left_mtime = left
        self.partials.save(record)
        return True

    def _settled(self, temp: str) -> tuple[int, int] | None:
        """The partial's size and time once the server has written what it had received
        (unchanged for SETTLE seconds, looked at every 20 ms; three seconds at most);
        None when the session is gone too."""
        seen: tuple[int, int] | None = None
        since = deadline = time.monotonic()
        deadline += 3.0
        while time.monotonic() < deadline:
            if self._sftp is None or not self._alive():
                return None  # (not a new login: the network may be down)
            try:
                with self._errors(f"stat {temp}"):
                    st = self._sftp.stat(temp)
            except RemoteError:
                return None
            now, at = (st.st_size or 0, int(st.st_mtime or 0)), time.monotonic()
            if now != seen:
                seen, since = now, at
            elif at - since >= SETTLE:
                return now
            time.sleep(0.02)
        return None

    def _resumable(self, name: str, local: Path, temp: str, size: int, sha256: str) -> int:
        """Where an upload of ``local`` (``size`` bytes, ``sha256``) under ``temp`` may
        resume: the length of the partial's proven prefix (the partial cut back to it),
        or 0 to start over. Proven: a record of this very content under this name; the
        partial no shorter than what the server acknowledged, no longer than the file,
        and as the cut left it (size and time); cut back by MARGIN (holes);
        and the bytes at the end of what is kept, and at one place inside it, read back
        equal to the file's."""
        record = self.partials.load(self.label, temp)
        if record is None:
            return 0
        why = ""
        sftp = self._client()
        try:
            with self._errors(f"stat {temp}"):
                st = sftp.stat(temp)
        except RemoteNotFound:
            return 0
        have, mtime = st.st_size or 0, int(st.st_mtime or 0)
        keep = (have - MARGIN) // REQUEST_BYTES * REQUEST_BYTES
        if (record.sha256, record.size) != (sha256, size):
            why = "the partial file is another content's"
        elif have > size or have < record.confirmed:
            why = (
                f"the partial file is {have:,} bytes: not within the {record.confirmed:,} "
                f"acknowledged and the {size:,} of the file"
            )
        elif record.left_size is not None and (have, mtime) != (
            record.left_size,
            record.left_mtime,
        ):
            why = "the partial file was changed after the cut (its size or time)"
        elif keep < MIN_RESUME:
            return 0
        else:
            why = self._spot_check(sftp, temp, local, keep)
        if why:
            log.warning("remote.resume_refused", endpoint=self.label, file=name, reason=why)
            return 0
        with self._errors(f"cut back {temp}"):
            sftp.truncate(temp, keep)
        log.info(
            "remote.resumed",
            endpoint=self.label,
            file=name,
            offset=keep,
            reason=f"{keep:,} of {size:,} bytes proven on the target; the rest sent",
        )
        return keep

    def _spot_check(self, sftp: paramiko.SFTPClient, temp: str, local: Path, keep: int) -> str:
        """Why the partial under ``temp`` is not the start of ``local`` ("" when its last
        SPOT_BYTES below ``keep`` and SPOT_BYTES at a random place below read back equal)."""
        spots = [(keep - SPOT_BYTES, SPOT_BYTES)]
        inside = secrets.randbelow(max(1, keep - 2 * SPOT_BYTES)) // 4096 * 4096
        spots.append((inside, min(SPOT_BYTES, keep - SPOT_BYTES - inside)))
        with self._errors(f"read back {temp}"), sftp.open(temp, "rb") as remote:
            theirs = list(remote.readv(spots))
        with open(local, "rb") as fh:
            for (offset, length), got in zip(spots, theirs, strict=True):
                fh.seek(offset)
                if fh.read(length) != got:
                    return f"its bytes at {offset:,} are not the file's"
        return ""

    def _put_jobs(self, jobs: builtins.list[PutJob], what: str) -> builtins.list[Any]:
        batch = PipelinedPuts(self.place(), self._channel(self._client()), jobs)
        results = self._pipelined(batch, what)
        if batch.mode_refused and not self.traits.mode_refused:
            self.traits.mode_refused = True
            log.warning(
                "remote.mode_refused",
                endpoint=self.label,
                reason="the server refused to set the files' mode; they keep its default",
            )
        return results

    def learn_rename(self) -> bool:
        """Whether this server's plain rename replaces an existing file, learned once per
        process by renaming one hidden probe file onto another in the endpoint's folder
        (the hardlink extension cannot tell: rclone answers it and creates nothing)."""
        if self.traits.rename_overwrites is not None:
            return self.traits.rename_overwrites
        sftp = self._client()
        self._clear_stale_probes(sftp)
        token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        first, second = (self._path(f"{PROBE}{token}-{n}") for n in ("a", "b"))
        overwrites = True
        learned = True
        try:
            with self._errors("learn the server's rename"):
                for path in (first, second):
                    with sftp.open(path, "wb") as fh:
                        fh.write(path[-1:].encode())
                try:
                    sftp.chmod(first, 0o600)
                    granted = stat_mod.S_IMODE(sftp.stat(first).st_mode or 0)
                except OSError:
                    granted = 0o600  # refused: said when a delivery asks for a mode
                self.traits.modes_ignored = granted != 0o600
                try:
                    sftp.rename(first, second)
                except OSError:
                    overwrites = False
        except (RemotePermissionDenied, RemoteNotFound, RemoteUnavailable) as exc:
            # A folder that is not there yet or cannot be written: no verdict. The unsafe
            # answer for now (names are checked before renames), learned again at the next
            # ask: a delivery creates the folder, a person mends its rights.
            log.info("remote.rename_unknown", endpoint=self.label, reason=exc.reason)
            learned = False
        finally:
            for path in (first, second):
                with suppress(OSError, paramiko.SSHException, EOFError):
                    if self._sftp is not None:
                        self._sftp.remove(path)
        if not learned:
            return True
        self.traits.rename_overwrites = overwrites
        if overwrites:
            log.warning(
                "remote.rename_overwrites",
                endpoint=self.label,
                reason="a plain rename replaces an existing file on this server: names are "
                "checked right before each rename; a file created under that name in the "
                "moment between would be replaced",
            )
        return overwrites

    def _check(self, verify: Verify | None, size: int, folder: str) -> Check:
        """How a file of ``size`` bytes is verified here (the server's digests learned
        first if they are wanted, in the target ``folder``, made if missing)."""
        hashes: tuple[str, ...] = ()
        if verify is not None and verify.how == "hash":
            if not self.traits.hashes_learned:
                with self._errors(f"create {folder}"):
                    self._makedirs(self._client(), folder)
            hashes = self.learn_hashes()
        return check_for(verify, size, hashes)

    def learn_hashes(self) -> tuple[str, ...]:
        """The digests this server computes of a file, learned once per process: the
        ``check-file`` extension must be announced (in the VERSION reply; ProFTPD 1.3.8
        announces it only to version 5 and 6 sessions, in ``supported2``, and serves it
        at every version: proftpd#1570), and its answer for a probe file of known content
        (larger than one read buffer) must be right (proftpd#1439: a server answered the
        digest of an empty file). Never assumed from the server's name."""
        if self.traits.hashes_learned:
            return self.traits.hashes
        sftp = self._client()
        names = set(self.traits.extensions)
        if CHECK_FILE not in names and CHECK_FILE in self._announced(6):
            self.traits.extensions[CHECK_FILE] = b""  # (announced to version 6 sessions)
            names.add(CHECK_FILE)
        if CHECK_FILE not in names:
            self.traits.hashes_learned = True
            return ()
        token = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        path = self._path(f"{PROBE}{token}-h")
        data = (hashlib.sha512(b"xchange hash probe").digest() * 1600)[:HASH_PROBE_BYTES]
        try:
            with self._errors("learn the server's digests"):
                with sftp.open(path, "wb") as fh:
                    fh.write(data)
                batch = FileHash(self._bare_place(), self._channel(sftp), path, len(data), HASHES)
                (said,) = self._pipelined(batch, "learn the server's digests")
        except (RemotePermissionDenied, RemoteNotFound, RemoteUnavailable) as exc:
            # A folder not there yet or not writable: learned again at the next ask.
            log.info("remote.hashes_unknown", endpoint=self.label, reason=exc.reason)
            return ()
        finally:
            with suppress(OSError, paramiko.SSHException, EOFError):
                if self._sftp is not None:
                    self._sftp.remove(path)
        hashes: tuple[str, ...] = ()
        if isinstance(said, tuple) and said[0] in HASHES:
            right = hashlib.new(said[0], data).hexdigest()
            if said[1] == right:
                hashes = (said[0],)
            else:
                log.warning(
                    "remote.hash_untrusted",
                    endpoint=self.label,
                    reason=f"the server's {said[0]} of a known file is {said[1]}, not "
                    f"{right}: its digests are not used; files are read back instead",
                )
        else:
            log.warning(
                "remote.hash_untrusted",
                endpoint=self.label,
                reason=f"check-file is announced but answered {said}: files are read back instead",
            )
        self.traits.hashes = hashes
        self.traits.hashes_learned = True
        return hashes

    def _announced(self, version: int) -> set[str]:
        """The extensions the server announces to a session of ``version``, read on a
        channel of its own (none if it cannot be read)."""
        assert self._ssh is not None
        transport = self._ssh.get_transport()
        if transport is None:
            return set()
        try:
            channel = transport.open_session(timeout=self.cfg.timeouts.operation)
        except (paramiko.SSHException, OSError, EOFError):
            return set()
        try:
            channel.settimeout(self.cfg.timeouts.operation)
            channel.invoke_subsystem("sftp")
            return extension_names(hello(channel, version))
        except (paramiko.SSHException, OSError, EOFError, ValueError):
            return set()
        finally:
            channel.close()

    def capabilities(self) -> Capabilities:
        """What this server does, learned (once per process) from its VERSION reply and a
        rename probe."""
        self._client()
        overwrites = self.learn_rename()
        ext = self.traits.extensions
        return Capabilities(
            atomic_rename=True,
            rename_refuses=not overwrites,
            posix_rename=self.traits.posix_rename,
            hard_links="hardlink@openssh.com" in ext,
            keeps_modes=not (self.traits.modes_ignored or self.traits.mode_refused),
            server_hashes=self.traits.hashes,
        )

    def _clear_stale_probes(self, sftp: paramiko.SFTPClient) -> None:
        """Remove probe files a killed process left (its pid gone on this host, or an
        hour old): nothing stays under a hidden name for long."""
        try:
            probes = self._read_folder(
                self.cfg.path, keep=lambda name, size, mtime: name.startswith(PROBE), hidden=True
            ).files
        except RemoteError:
            return
        host, now = socket.gethostname(), time.time()
        for probe in probes:
            parts = probe.name[len(PROBE) :].rsplit("-", 3)
            mine_dead = (
                len(parts) == 4
                and parts[0] == host
                and parts[1].isdigit()
                and not pid_alive(int(parts[1]))
            )
            if mine_dead or now - (probe.mtime_ns / 1e9 or now) > 3600:
                with suppress(OSError, paramiko.SSHException, EOFError):
                    sftp.remove(self._path(probe.name))

    def describe(self) -> builtins.list[str]:
        """The server's traits, learned now if need be (``check --remote``, ``trust``)."""
        self._client()
        self.learn_rename()
        self.learn_hashes()
        return self.traits.describe()

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        if not puts:
            return []
        sftp = self._client()
        self.learn_rename()
        with self._errors("create the target folders"):
            for folder in sorted({posixpath.dirname(self._path(p.temp_name)) for p in puts}):
                self._makedirs(sftp, folder)
        jobs: list[PutJob] = []
        refused: dict[int, RemoteError] = {}
        for i, p in enumerate(puts):
            try:
                check = self._check(
                    p.verify, len(p.data), posixpath.dirname(self._path(p.temp_name))
                )
            except CannotVerify as exc:
                refused[i] = exc  # not sent
                continue
            jobs.append(PutJob(len(jobs), p, len(p.data), None, check=check))
        sent = iter(self._put_jobs(jobs, f"deliver {len(puts)} files") if jobs else [])
        results = [refused[i] if i in refused else next(sent) for i in range(len(puts))]
        rooms: dict[str, int | None] = {}
        return [
            None
            if error is None
            else self._with_room(
                error, len(put.data), posixpath.dirname(self._path(put.temp_name)), rooms
            )
            for put, error in zip(puts, results, strict=True)
        ]

    def _with_room(
        self,
        error: RemoteError,
        size: int,
        folder: str,
        rooms: dict[str, int | None] | None = None,
    ) -> RemoteError:
        """A bare "Failure" on an upload, with the upload's size and the room the server
        says there is (``statvfs@openssh.com``, where it offers it; asked once per folder
        of a batch)."""
        if GENERIC_FAILURE not in error.message or STATVFS not in self.traits.extensions:
            return error
        rooms = {} if rooms is None else rooms
        if folder not in rooms:
            rooms[folder] = self._free_space(folder)
        free = rooms[folder]
        if free is None:
            return error
        return type(error)(
            f"{error.message}; {size:,} bytes to write, {free:,} bytes free there (as the "
            "server says)"
        )

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        if not files:
            return []
        batch = PipelinedGets(self._bare_place(), self._channel(self._client()), files)
        return self._pipelined(batch, f"read {len(files)} files")

    def move_many(
        self, names: Sequence[str], folder: str, *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[str | RemoteError]:
        if not names:
            return []
        sftp = self._client()
        sub = safe_subfolder(folder)
        dest_dir = posixpath.join(self.cfg.path, sub)
        with self._errors(f"archive into {sub}"):
            self._makedirs(sftp, dest_dir)
        self.learn_rename()
        batch = PipelinedMoves(self.place(), self._channel(sftp), names, sub, expect)
        return self._pipelined(batch, f"archive {len(names)} files")

    def remove_many(
        self, names: Sequence[str], *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[RemoteError | None]:
        if not names:
            return []
        batch = PipelinedRemoves(self._bare_place(), self._channel(self._client()), names, expect)
        done: builtins.list[RemoteError | None] = self._pipelined(
            batch, f"remove {len(names)} files"
        )
        for name, error in zip(names, done, strict=True):
            # A partial an upload cut left (a temporary name), removed: nothing to resume.
            if error is not None or not name.endswith(".xchange-part"):
                continue
            kept = self.partials.load(self.label, self._path(name))
            if kept is not None:
                self.partials.drop(kept)
        return done

    def _free_space(self, folder: str) -> int | None:
        if self._sftp is None or not self._alive():
            return None
        try:
            batch = FreeSpace(self._bare_place(), self._channel(self._sftp), folder)
            (free,) = self._pipelined(batch, "ask the free space")
        except RemoteError:
            return None
        return free if isinstance(free, int) else None

    def _channel(self, sftp: paramiko.SFTPClient) -> paramiko.Channel:
        channel = sftp.get_channel()
        if channel is None:
            self.close()
            raise ConnectionLost(f"{self._where()}: the SFTP session has no channel")
        return channel

    def _pipelined(self, batch: Pipeline, what: str) -> builtins.list[Any]:
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

    def move(self, name: str, folder: str, *, expect: FileInfo | None = None) -> str:
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
            dest = posixpath.join(dest_dir, dest_name)
            if expect is not None:
                self._still(sftp, name, self._path(name), expect)
            sftp.rename(self._path(name), dest)
            if expect is not None:
                self._check_moved(sftp, name, dest, expect)
        return posixpath.join(sub, dest_name)

    def _still(self, sftp: paramiko.SFTPClient, name: str, path: str, expect: FileInfo) -> None:
        """The file at ``path`` is still the one taken (size and time), or SourceChanged."""
        st = sftp.lstat(path)
        now = FileInfo(name, st.st_size or 0, int(st.st_mtime or 0) * 1_000_000_000)
        if not expect.same_file(now):
            raise SourceChanged(
                f"{self._where()}: {name}: changed since it was taken ({expect.size} -> "
                f"{now.size} bytes); left in place, to be taken as a new file"
            )

    def _check_moved(
        self, sftp: paramiko.SFTPClient, name: str, moved: str, expect: FileInfo
    ) -> None:
        """What was moved is the file taken; else it goes back under its name."""
        try:
            self._still(sftp, name, moved, expect)
        except SourceChanged:
            with suppress(OSError):
                if not self._exists(sftp, self._path(name)):
                    sftp.rename(moved, self._path(name))
            raise SourceChanged(
                f"{self._where()}: {name}: replaced while it was being moved; put back, to be "
                "taken as a new file"
            ) from None

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

    def remove(self, name: str, *, expect: FileInfo | None = None) -> None:
        sftp = self._client()
        path = self._path(name)
        try:
            with self._errors(f"remove {name}"):
                if expect is None:
                    sftp.remove(path)
                    return
                # Moved aside first, then judged by what was moved: a file written under
                # the name in between is never the one deleted.
                self._still(sftp, name, path, expect)
                aside = self._path(hidden_name(name, secrets.token_hex(4), "xchange-del"))
                sftp.rename(path, aside)
                self._check_moved(sftp, name, aside, expect)
                sftp.remove(aside)
        except RemoteNotFound:
            pass

    def claim_drop(self, owner: DropOwner, ttl: float) -> DropOwner | None:
        """A hidden mark file in the folder naming the owner and the time of its last look;
        another owner's mark older than ``ttl`` seconds is taken over."""
        sftp = self._client()
        mark = self._path(DROP_MARK)
        found = io.BytesIO()
        try:
            with self._errors("read the drop mark"):
                sftp.getfo(mark, found)
        except RemoteNotFound:
            pass
        except RemoteError:
            return None
        holder = DropOwner.parse(found.getvalue().decode(errors="replace"))
        if (
            holder is not None
            and holder.journal_id != owner.journal_id
            and owner.at - holder.at < ttl
        ):
            return holder
        try:
            with self._errors("write the drop mark"), sftp.open(mark, "wb") as fh:
                fh.write(owner.text().encode())
        except RemoteError:
            return None  # a folder that cannot be written is not guarded
        return None

    def release_drop(self, owner: DropOwner) -> None:
        if self._sftp is None or not self._alive():
            return
        mark = self._path(DROP_MARK)
        with suppress(OSError, paramiko.SSHException, EOFError):
            found = io.BytesIO()
            self._sftp.getfo(mark, found)
            holder = DropOwner.parse(found.getvalue().decode(errors="replace"))
            if holder is not None and holder.journal_id == owner.journal_id:
                self._sftp.remove(mark)

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

    def pinned_host_keys(self) -> builtins.list[paramiko.PKey]:
        """The keys known_hosts pins for this endpoint's host (none if it has no file)."""
        path = self.cfg.known_hosts
        if not path.exists():
            return []
        hosts = paramiko.HostKeys()
        KnownHosts.read(path, self._where(), self.label).into(hosts)
        found = hosts.lookup(_host_entry(self.cfg.host, self.cfg.port))
        return list(found.values()) if found else []

    def pin_host_key(self, key: paramiko.PKey) -> None:
        """Pin the key for this endpoint's host in its known_hosts file: every plain line
        pinning exactly this host (of any key type) is replaced by one line; every other
        line (other hosts, @revoked and @cert-authority lines, comments) is kept as it is.
        The file keeps its mode and owner; a new one is 0644 (host keys are public, and
        the service's user must read a file that root pinned).

        Raises:
            HostKeyMismatch: the file marks this key @revoked.
        """
        path = self.cfg.known_hosts
        host = _host_entry(self.cfg.host, self.cfg.port)
        before: os.stat_result | None = None
        if path.exists():
            known = KnownHosts.read(path, self._where(), self.label)
            if known.is_revoked(key):
                raise HostKeyMismatch(
                    f"{self._where()}: {path} marks the server's key {fingerprint(key)} "
                    "@revoked: not pinned"
                )
            lines = path.read_text(encoding="utf-8").splitlines()
            before = path.stat()
        else:
            lines = []
        kept = [out for line in lines if (out := _without_host(line, host)) is not None]
        kept.append(f"{host} {key.get_name()} {key.get_base64()}")
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            if before is None:
                os.fchmod(fd, 0o644)
            else:
                os.fchmod(fd, before.st_mode & 0o7777)
                if os.geteuid() == 0:
                    os.fchown(fd, before.st_uid, before.st_gid)
        except OSError:
            os.close(fd)
            temp.unlink(missing_ok=True)
            raise
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("\n".join(kept) + "\n")
        os.replace(temp, path)


def _without_host(line: str, host: str) -> str | None:
    """A known_hosts line without its pin for exactly ``host``: the same line if it pins
    another host (or is a marker, comment or blank), the line with ``host`` taken out of
    its list of names, or None if ``host`` was its only name."""
    fields = line.split(maxsplit=1)
    if len(fields) < 2 or fields[0].startswith(("@", "#")):
        return line
    names = fields[0].split(",")
    if host not in names:
        return line
    rest = [n for n in names if n != host]
    return f"{','.join(rest)} {fields[1]}" if rest else None


class _RevokedKey(paramiko.SSHException):
    def __init__(self, key: paramiko.PKey) -> None:
        super().__init__("revoked host key")
        self.key = key


#: The names of the probes' files (``.xchange-probe-HOST-PID-TOKEN-a``).
PROBE = ".xchange-probe-"
#: The size of the file the server's digests are checked on: more than one 64 KiB read.
HASH_PROBE_BYTES = 100_003


class _UnknownKey(paramiko.SSHException):
    def __init__(self, hostname: str) -> None:
        super().__init__(f"Server {hostname!r} not found in known_hosts")


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, telling a key known_hosts marks @revoked apart."""

    def __init__(self, known: KnownHosts) -> None:
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known.is_revoked(key):
            raise _RevokedKey(key)
        raise _UnknownKey(hostname)


@dataclass
class KnownHosts:
    """A known_hosts file as OpenSSH reads it: pinned keys, and keys marked @revoked
    (refused for every host). @cert-authority lines are not supported: skipped, said."""

    entries: list[paramiko.hostkeys.HostKeyEntry]
    revoked: set[bytes]

    @classmethod
    def read(cls, path: Path, where: str, label: str) -> KnownHosts:
        """Parse ``path``.

        Raises:
            HostKeyUnknown: the file is missing, or a line is not a known_hosts line (its
                file and line number named).
        """
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            raise HostKeyUnknown(
                f"{where}: known_hosts file {path} does not exist; run `xchange trust "
                f"{label}` to check the server's fingerprint and pin it"
            ) from None
        entries: list[paramiko.hostkeys.HostKeyEntry] = []
        revoked: set[bytes] = set()
        for number, raw in enumerate(text.splitlines(), start=1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            marker = ""
            if line.startswith("@"):
                marker, _, line = line.partition(" ")
                line = line.strip()
                if marker not in ("@revoked", "@cert-authority"):
                    raise HostKeyUnknown(
                        f"{path}: line {number}: unknown marker {marker!r} (OpenSSH knows "
                        "@revoked and @cert-authority); fix or remove the line"
                    )
            try:
                entry = paramiko.hostkeys.HostKeyEntry.from_line(line, number)
            except (paramiko.hostkeys.InvalidHostKey, ValueError, IndexError):
                raise HostKeyUnknown(
                    f"{path}: line {number}: not a valid known_hosts line; fix or remove it"
                ) from None
            if entry is None:
                continue  # a key type paramiko does not know: it cannot match anyway
            if marker == "@revoked":
                revoked.add(entry.key.asbytes())
            elif marker == "@cert-authority":
                log.warning(
                    "known_hosts.cert_authority_skipped",
                    file=str(path),
                    line=number,
                    reason="certificate authorities are not supported; pin the host key",
                )
            else:
                entries.append(entry)
        return cls(entries, revoked)

    def is_revoked(self, key: paramiko.PKey) -> bool:
        return key.asbytes() in self.revoked

    def into(self, hosts: paramiko.HostKeys) -> None:
        """Add the pinned keys (but revoked ones) to paramiko's store."""
        for entry in self.entries:
            if self.is_revoked(entry.key):
                continue
            for name in entry.hostnames:
                hosts.add(name, entry.key.get_name(), entry.key)
