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
import io
import itertools
import os
import posixpath
import secrets
import socket
import stat as stat_mod
import struct
import threading
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
    SourceChanged,
    TargetExists,
)
from xchange.faults import checkpoint
from xchange.private import private_folder
from xchange.remote import openssh
from xchange.remote.base import (
    DROP_MARK,
    DropOwner,
    FileInfo,
    SmallPut,
    hidden_name,
    is_temporary,
    safe_subfolder,
)

log = structlog.get_logger(__name__)


def fingerprint(key: paramiko.PKey) -> str:
    """OpenSSH-style SHA256 fingerprint of a key."""
    return str(key.fingerprint)


def _host_entry(host: str, port: int) -> str:
    return host if port == 22 else f"[{host}]:{port}"


class _Client(paramiko.SFTPClient):
    """paramiko's SFTP client, keeping the extensions the server's VERSION reply lists
    (paramiko reads and drops them)."""

    extensions: dict[str, bytes]

    def _send_version(self) -> int:
        message = paramiko.Message()
        message.add_int(3)
        self._send_packet(paramiko.sftp.CMD_INIT, message)
        t, data = self._read_packet()
        if t != paramiko.sftp.CMD_VERSION:
            raise paramiko.SFTPError("Incompatible sftp protocol")
        version = int(struct.unpack(">I", data[:4])[0])
        self.extensions = _extension_pairs(bytes(data[4:]))
        return version


def _extension_pairs(data: bytes) -> dict[str, bytes]:
    pairs: dict[str, bytes] = {}
    pos = 0
    try:
        while pos < len(data):
            (n,) = _U32.unpack_from(data, pos)
            name = data[pos + 4 : pos + 4 + n].decode("utf-8", "replace")
            pos += 4 + n
            (n,) = _U32.unpack_from(data, pos)
            pairs[name] = data[pos + 4 : pos + 4 + n]
            pos += 4 + n
    except struct.error:
        pass  # a malformed tail: keep what was read
    return pairs


@dataclass
class ServerTraits:
    """What one SFTP server does differently, learned once per process."""

    #: The extensions its VERSION reply lists.
    extensions: dict[str, bytes] = field(default_factory=dict)
    #: Whether a plain SFTP rename replaces an existing file (rclone, MySecureShell) or
    #: refuses it (OpenSSH, ProFTPD, gesftpserver); None until learned. A server whose
    #: answer could not be learned is treated as replacing (names are checked first).
    rename_overwrites: bool | None = None
    #: Whether it refused to set a file's mode (warned about once).
    mode_refused: bool = False
    #: Whether it accepts a mode but keeps its own (rclone): no mode is sent then.
    modes_ignored: bool = False

    @property
    def posix_rename(self) -> bool:
        return "posix-rename@openssh.com" in self.extensions

    def describe(self) -> list[str]:
        """What an operator should know, one line each (for `check --remote`, `trust`)."""
        lines = ["extensions: " + (", ".join(sorted(self.extensions)) or "none")]
        if self.rename_overwrites:
            lines.append(
                "a plain rename replaces an existing file here: without overwrite, each name "
                "is checked right before its rename; a file the partner creates under that "
                "name in between (milliseconds) would be replaced"
            )
        elif self.rename_overwrites is False:
            lines.append("a plain rename refuses an existing name: names are never replaced")
        if not self.posix_rename:
            lines.append(
                "no posix-rename: overwriting moves the old file aside, renames the new one "
                "in, then deletes the old one (restored if the rename fails)"
            )
        if self.modes_ignored or self.mode_refused:
            lines.append("files keep the server's own mode: target.mode cannot be applied here")
        return lines


_TRAITS: dict[tuple[str, int, str], ServerTraits] = {}
_TRAITS_LOCK = threading.Lock()


class SFTPRemote:
    """One SFTP endpoint; connects lazily and reconnects after a lost session."""

    def __init__(self, label: str, cfg: SFTPEndpoint) -> None:
        self.label = label
        self.cfg = cfg
        self._ssh: paramiko.SSHClient | None = None
        self._sftp: paramiko.SFTPClient | None = None
        with _TRAITS_LOCK:
            self.traits = _TRAITS.setdefault((cfg.host, cfg.port, cfg.user), ServerTraits())

    # ------------------------------------------------------------------ connection

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
                sftp = _Client.from_transport(transport)
                if sftp is None:
                    raise ConnectionLost(f"{self._where()}: no SFTP session")
                self.traits.extensions = dict(getattr(sftp, "extensions", {}))
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
        private_folder(scratch)
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
        self,
        name: str,
        src: BinaryIO,
        size: int,
        *,
        temp_name: str,
        overwrite: bool,
        mode: int | None = None,
    ) -> FileInfo:
        sftp = self._client()
        self.learn_rename()
        put = SmallPut(name, b"", temp_name, overwrite, mode)
        local = getattr(src, "name", None)
        if isinstance(local, str) and Path(local).is_file() and self._accelerated(size):
            temp = self._path(temp_name)
            with self._errors(f"upload {name}"):
                self._makedirs(sftp, posixpath.dirname(temp))
            try:
                openssh.transfer(self.cfg, self._where(), "put", Path(local), temp)
            except BaseException:
                self._discard(temp)
                raise
            job = _PutJob(0, put, size, None, uploaded=True)
        else:
            job = _PutJob(0, put, size, src)
        error = self._put_jobs([job], f"upload {name}")[0]
        if isinstance(error, RemoteNotFound) and job.source is not None and job.opened is False:
            # The target folder is missing: create it and send again.
            with self._errors(f"upload {name}"):
                self._makedirs(self._client(), posixpath.dirname(self._path(temp_name)))
            src.seek(0)
            job = _PutJob(0, put, size, src)
            error = self._put_jobs([job], f"upload {name}")[0]
        if error is not None:
            raise error
        return FileInfo(name, size, job.mtime_ns)

    def _put_jobs(self, jobs: builtins.list[_PutJob], what: str) -> builtins.list[Any]:
        batch = _PipelinedPuts(self, self._channel(self._client()), jobs)
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
        token = secrets.token_hex(6)
        first, second = (self._path(f".xchange-probe-{token}-{n}") for n in ("a", "b"))
        overwrites = True
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
            # A folder that cannot be written: nothing will be renamed into it by a delivery
            # either; assume the unsafe answer (names are checked before renames).
            log.info("remote.rename_unknown", endpoint=self.label, reason=exc.reason)
        finally:
            for path in (first, second):
                with suppress(OSError, paramiko.SSHException, EOFError):
                    if self._sftp is not None:
                        self._sftp.remove(path)
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

    def describe(self) -> builtins.list[str]:
        """The server's traits, learned now if need be (``check --remote``, ``trust``)."""
        self._client()
        self.learn_rename()
        return self.traits.describe()

    def put_many(self, puts: Sequence[SmallPut]) -> builtins.list[RemoteError | None]:
        if not puts:
            return []
        sftp = self._client()
        self.learn_rename()
        with self._errors("create the target folders"):
            for folder in sorted({posixpath.dirname(self._path(p.temp_name)) for p in puts}):
                self._makedirs(sftp, folder)
        jobs = [_PutJob(i, p, len(p.data), None) for i, p in enumerate(puts)]
        return self._put_jobs(jobs, f"deliver {len(puts)} files")

    def get_many(self, files: Sequence[FileInfo]) -> builtins.list[bytes | RemoteError]:
        if not files:
            return []
        batch = _PipelinedGets(self, self._channel(self._client()), files)
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
        batch = _PipelinedMoves(self, self._channel(sftp), names, sub, expect)
        return self._pipelined(batch, f"archive {len(names)} files")

    def remove_many(
        self, names: Sequence[str], *, expect: Sequence[FileInfo] | None = None
    ) -> builtins.list[RemoteError | None]:
        if not names:
            return []
        batch = _PipelinedRemoves(self, self._channel(self._client()), names, expect)
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

    def pinned_host_keys(self) -> list[paramiko.PKey]:
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


class _Refuse(paramiko.MissingHostKeyPolicy):
    """paramiko's RejectPolicy, telling a key known_hosts marks @revoked apart."""

    def __init__(self, known: KnownHosts) -> None:
        self.known = known

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        if self.known.is_revoked(key):
            raise _RevokedKey(key)
        raise paramiko.SSHException(f"Server {hostname!r} not found in known_hosts")


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


@dataclass(slots=True)
class _PutJob:
    """One file of a delivery and where it stands: its bytes come from ``put.data`` (a
    small file in memory), from ``source`` (read as the writes go), or are on the server
    under the temporary name already (``uploaded``: sent by OpenSSH's client)."""

    index: int
    put: SmallPut
    size: int
    source: BinaryIO | None
    uploaded: bool = False
    temp: bytes = b""
    final: bytes = b""
    aside: bytes = b""
    handle: bytes = b""
    #: upload -> (look | aside) -> rename -> done, or -> discard on an error.
    phase: str = "upload"
    #: Bytes sent so far, and whether the last of them (and the close) is out.
    sent: int = 0
    all_sent: bool = False
    opened: bool = False
    #: Requests without their reply yet.
    pending: int = 0
    #: The final name is taken (a look or the check sent with the rename says so).
    taken: bool = False
    #: The old file was moved aside (overwrite without posix-rename).
    moved_aside: bool = False
    renamed: bool = False
    rename_error: RemoteError | None = None
    #: The size check came back before the rename's reply on a server that answers out
    #: of order: it is asked again once the rename is confirmed.
    check_again: bool = False
    #: The final file's time, from the size check.
    mtime_ns: int = 0
    error: RemoteError | None = None


def _attrs(body: memoryview) -> tuple[int | None, int | None]:
    """Size and modification time from an ATTRS reply (None: not given)."""
    (flags,) = _U32.unpack_from(body)
    pos, size, mtime = 4, None, None
    if flags & _ATTR_SIZE:
        (size,) = _U64.unpack_from(body, pos)
        pos += 8
    if flags & 0x02:  # uid, gid
        pos += 8
    if flags & _ATTR_PERMISSIONS:
        pos += 4
    if flags & 0x08:  # atime, mtime
        (mtime,) = _U32.unpack_from(body, pos + 4)
    return size, mtime


#: Write requests of one file in flight at once (a big file streams through this window).
WRITE_WINDOW = 64
_SETSTAT, _FSETSTAT, _ATTR_PERMISSIONS = 9, 10, 0x04


class _PipelinedPuts(_Pipeline):
    """Deliveries, many files overlapped on one session, each through these steps:

    1. open the temporary name; the writes (a window of ``WRITE_WINDOW`` requests, refilled
       as replies come, in whatever order the server answers: gesftpserver answers writes
       out of order), the mode (``fsetstat``) and the close follow it;
    2. without overwrite, on a server whose plain rename replaces files: a look at the final
       name right before the rename (taken: ``TargetExists``);
    3. the rename: ``posix-rename@openssh.com`` to overwrite, or, where the server lacks it,
       the old file moved aside, the new one renamed in, the old one deleted (moved back
       if the rename fails); a plain rename otherwise (refused when the name is taken);
    4. the size under the final name, checked.

    A file counts as delivered only once the check's reply says so; on an error its
    temporary file is removed.
    """

    def __init__(
        self, remote: SFTPRemote, channel: paramiko.Channel, jobs: Sequence[_PutJob]
    ) -> None:
        super().__init__(remote, channel, len(jobs))
        self.traits = remote.traits
        self.mode_refused = False
        for job in jobs:
            job.temp = remote._path(job.put.temp_name).encode("utf-8")
            job.final = remote._path(job.put.name).encode("utf-8")
            aside = hidden_name(job.put.name, secrets.token_hex(4), "xchange-old")
            job.aside = remote._path(aside).encode("utf-8")
        self.jobs = jobs

    def _result(self, job: _PutJob) -> RemoteError | None:
        return job.error

    def _request(self, job: _PutJob, step: str, t: int, *fields: bytes) -> None:
        self._send(job, step, t, *fields)
        job.pending += 1

    # ------------------------------------------------------------------ upload

    def _open(self, job: _PutJob) -> None:
        if job.uploaded:
            # Sent by OpenSSH's client: its size, and its mode, then on as usual.
            self._request(job, "sent", _LSTAT, _string(job.temp))
            if self._wants_mode(job):
                self._mode(job, _SETSTAT, _string(job.temp))
            return
        flags = _U32.pack(_OPEN_WRITE_CREATE_TRUNCATE)
        self._request(job, "open", _OPEN, _string(job.temp), flags, _U32.pack(0))

    def _wants_mode(self, job: _PutJob) -> bool:
        """A mode is asked for, and the server keeps the modes it is given."""
        return job.put.mode is not None and not self.traits.modes_ignored

    def _mode(self, job: _PutJob, request: int, target: bytes) -> None:
        assert job.put.mode is not None
        attrs = _U32.pack(_ATTR_PERMISSIONS) + _U32.pack(job.put.mode & 0o7777)
        self._request(job, "mode", request, target, attrs)

    def _chunk(self, job: _PutJob) -> bytes:
        want = min(REQUEST_BYTES, job.size - job.sent)
        if want <= 0:
            return b""
        if job.source is None:
            return job.put.data[job.sent : job.sent + want]
        return job.source.read(want)

    def _fill(self, job: _PutJob) -> None:
        """Keep the window of writes full; after the last one (or an error), the mode and
        the close."""
        handle = _string(job.handle)
        while not job.all_sent and job.pending < WRITE_WINDOW:
            chunk = b"" if job.error is not None else self._chunk(job)
            if not chunk:
                job.all_sent = True
                if job.error is None and job.sent != job.size:
                    job.error = ConnectionLost(
                        f"{self.remote._where()}: {job.put.name}: the source gave {job.sent} "
                        f"bytes, not {job.size}"
                    )
                if self._wants_mode(job) and job.error is None:
                    self._mode(job, _FSETSTAT, handle)
                self._request(job, "close", _CLOSE, handle)
                return
            self._request(job, "write", _WRITE, handle, _U64.pack(job.sent), _string(chunk))
            job.sent += len(chunk)

    # ------------------------------------------------------------------ replies

    def _step(self, job: _PutJob, step: str, t: int, body: memoryview) -> bool:
        """Act on one reply; True when the job is finished (well or not)."""
        job.pending -= 1
        name = job.put.name
        if step == "open":
            if t != _HANDLE:
                job.error = self._error(t, body, f"upload {name}") or RemoteUnavailable(
                    f"{self.remote._where()}: upload {name}: no handle"
                )
                return True
            job.opened = True
            (length,) = _U32.unpack_from(body)
            job.handle = bytes(body[4 : 4 + length])
            self._fill(job)
        elif step == "write":
            job.error = job.error or self._error(t, body, f"upload {name}")
            self._fill(job)
        elif step == "close":
            job.error = job.error or self._error(t, body, f"upload {name}")
        elif step == "mode":
            # A server that keeps its own modes (rclone) may refuse: the file still goes.
            if self._error(t, body, f"set the mode of {name}") is not None:
                self.mode_refused = True
        elif step == "sent":
            job.error = job.error or self._sized(t, body, job, "the upload is incomplete")
        elif step == "look":
            if t == _ATTRS:
                job.taken = True
            else:
                error = self._error(t, body, f"look at {name}")
                if not isinstance(error, RemoteNotFound):
                    job.error = error or RemoteUnavailable(
                        f"{self.remote._where()}: look at {name}: unexpected reply"
                    )
        elif step == "aside":
            error = self._error(t, body, f"move the old {name} aside")
            if error is None:
                job.moved_aside = True
            elif not isinstance(error, RemoteNotFound):  # not found: no old file
                job.error = error
        elif step == "rename":
            self._renamed(job, t, body)
        elif step == "restore":
            job.moved_aside = False
        elif step == "check":
            self._checked(job, t, body)
        if job.pending:
            return False
        return self._next(job)

    def _next(self, job: _PutJob) -> bool:
        """All replies of a phase are in: on to the next one; True when done."""
        phase = job.phase
        if phase == "discard":
            return True
        if job.error is not None and phase != "rename":
            return self._discard(job)
        if phase == "upload":
            checkpoint("before-rename")
            if not job.put.overwrite and self.traits.rename_overwrites is not False:
                # This server's rename would replace a file: look right before renaming.
                job.phase = "look"
                self._request(job, "look", _LSTAT, _string(job.final))
                return False
            if (
                job.put.overwrite
                and not self.traits.posix_rename
                and not self.traits.rename_overwrites
            ):
                job.phase = "aside"
                self._request(job, "aside", _RENAME, _string(job.final), _string(job.aside))
                return False
            return self._rename(job)
        if phase == "look" and job.taken:
            job.error = TargetExists(f"{self.remote._where()}: {job.put.name} already exists")
            return self._discard(job)
        if phase in ("look", "aside"):
            return self._rename(job)
        # The rename is over.
        if job.rename_error is not None:
            taken = not job.put.overwrite and job.taken
            job.error = (
                TargetExists(f"{self.remote._where()}: {job.put.name} already exists")
                if taken
                else job.rename_error
            )
            return self._discard(job)
        return True

    def _rename(self, job: _PutJob) -> bool:
        job.phase = "rename"
        temp, final = _string(job.temp), _string(job.final)
        if job.put.overwrite and self.traits.posix_rename:
            extension = _string(b"posix-rename@openssh.com")
            self._request(job, "rename", _EXTENDED, extension, temp, final)
        else:
            self._request(job, "rename", _RENAME, temp, final)
        # The size check goes with it (a server answering in order replies after the
        # rename; one that does not is asked again once the rename is confirmed).
        self._request(job, "check", _LSTAT, final)
        return False

    def _renamed(self, job: _PutJob, t: int, body: memoryview) -> None:
        error = self._error(t, body, f"rename to {job.put.name}")
        if error is None:
            job.renamed = True
            if job.moved_aside:
                job.moved_aside = False
                self._request(job, "drop-old", _REMOVE, _string(job.aside))
            if job.check_again:
                job.check_again = False
                job.error = None
                self._request(job, "check", _LSTAT, _string(job.final))
            return
        job.rename_error = error
        if job.moved_aside:
            self._request(job, "restore", _RENAME, _string(job.aside), _string(job.final))

    def _checked(self, job: _PutJob, t: int, body: memoryview) -> None:
        if job.renamed:
            job.error = job.error or self._sized(t, body, job, "")
            return
        job.taken = t == _ATTRS
        if job.rename_error is None:
            job.check_again = True  # came before the rename's reply

    def _sized(self, t: int, body: memoryview, job: _PutJob, what: str) -> RemoteError | None:
        """The error a stat reply shows (None: the expected size)."""
        name = job.put.name
        if t != _ATTRS:
            return self._error(t, body, f"check {name}") or RemoteUnavailable(
                f"{self.remote._where()}: check {name}: no attributes"
            )
        size, mtime = _attrs(body)
        if size == job.size:
            job.mtime_ns = (mtime or 0) * 1_000_000_000
            return None
        return ConnectionLost(
            f"{self.remote._where()}: {name}: {what + ': ' if what else ''}sent {job.size} "
            f"bytes but the server shows {size}"
        )

    def _discard(self, job: _PutJob) -> bool:
        """Remove the temporary file (if there is one); the job ends with its error."""
        job.phase = "discard"
        if job.opened or job.uploaded:
            self._request(job, "discard", _REMOVE, _string(job.temp))
            return False
        return True


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
    expect: FileInfo | None = None
    pending: int = 0
    taken: bool = False
    renamed: bool = False
    error: RemoteError | None = None


def _same(t: int, body: memoryview, expect: FileInfo) -> bool:
    """Whether an LSTAT reply shows the file taken (size and time)."""
    if t != _ATTRS:
        return False
    size, mtime = _attrs(body)
    return expect.same_file(FileInfo(expect.name, size or 0, (mtime or 0) * 1_000_000_000))


class _PipelinedMoves(_Pipeline):
    """Archive moves: a plain SFTP rename each, which refuses a name already taken; on a
    server whose rename replaces files, a look at the name first (taken: an error, and
    ``move`` finds a free name). With the files as they were taken, each is looked at
    right before its rename (changed: left in place) and right after it (replaced in
    between: put back)."""

    def __init__(
        self,
        remote: SFTPRemote,
        channel: paramiko.Channel,
        names: Sequence[str],
        sub: str,
        expect: Sequence[FileInfo] | None = None,
    ) -> None:
        super().__init__(remote, channel, len(names))
        self.look_first = remote.traits.rename_overwrites is not False
        dest_dir = posixpath.join(remote.cfg.path, sub)
        self.jobs = [
            _MoveJob(
                i,
                name,
                remote._path(name).encode("utf-8"),
                posixpath.join(dest_dir, posixpath.basename(name)).encode("utf-8"),
                posixpath.join(sub, posixpath.basename(name)),
                expect[i] if expect else None,
            )
            for i, name in enumerate(names)
        ]

    def _request(self, job: _MoveJob, step: str, t: int, *fields: bytes) -> None:
        self._send(job, step, t, *fields)
        job.pending += 1

    def _open(self, job: _MoveJob) -> None:
        if self.look_first:
            self._request(job, "look", _LSTAT, _string(job.dest))
        if job.expect is not None:
            self._request(job, "still", _LSTAT, _string(job.source))
        if not job.pending:
            self._rename(job)

    def _rename(self, job: _MoveJob) -> None:
        self._request(job, "rename", _RENAME, _string(job.source), _string(job.dest))
        if job.expect is not None:
            self._request(job, "moved", _LSTAT, _string(job.dest))

    def _changed(self, job: _MoveJob, what: str) -> SourceChanged:
        return SourceChanged(f"{self.remote._where()}: {job.name}: {what}")

    def _step(self, job: _MoveJob, step: Any, t: int, body: memoryview) -> bool:
        job.pending -= 1
        where = f"archive {job.name}"
        if step == "look":
            if t == _ATTRS:
                job.taken = True
            else:
                error = self._error(t, body, where)
                if not isinstance(error, RemoteNotFound):
                    job.error = job.error or error
        elif step == "still":
            if not _same(t, body, job.expect):  # type: ignore[arg-type]
                error = self._error(t, body, where) if t != _ATTRS else None
                job.error = (
                    job.error
                    or error
                    or self._changed(
                        job, "changed since it was taken; left in place, to be taken as new"
                    )
                )
        elif step == "rename":
            job.error = self._error(t, body, where)
            job.renamed = job.error is None
        elif step == "moved":
            self._moved(job, t, body)
        if job.pending:
            return False
        if step in ("look", "still"):
            if job.taken and job.error is None:
                job.error = TargetExists(
                    f"{self.remote._where()}: {where}: {job.place} already exists"
                )
            if job.error is None:
                self._rename(job)
                return False
        return True

    def _moved(self, job: _MoveJob, t: int, body: memoryview) -> None:
        """After the rename: what was moved is the file taken, else it goes back."""
        assert job.expect is not None
        if job.renamed and not _same(t, body, job.expect):
            job.error = self._changed(
                job, "replaced while it was being moved; put back, to be taken as new"
            )
            self._request(job, "back", _RENAME, _string(job.dest), _string(job.source))

    def _result(self, job: _MoveJob) -> str | RemoteError:
        return job.error if job.error is not None else job.place


@dataclass(slots=True)
class _RemoveJob:
    index: int
    name: str
    path: bytes
    aside: bytes = b""
    expect: FileInfo | None = None
    error: RemoteError | None = None


class _PipelinedRemoves(_Pipeline):
    """Deletes: one SFTP remove each (a file already gone is not an error). With the files
    as they were taken, each is moved aside first and judged by what was moved: the file
    taken is deleted, another one is put back."""

    def __init__(
        self,
        remote: SFTPRemote,
        channel: paramiko.Channel,
        names: Sequence[str],
        expect: Sequence[FileInfo] | None = None,
    ) -> None:
        super().__init__(remote, channel, len(names))
        self.jobs = []
        for i, name in enumerate(names):
            path = remote._path(name)
            aside = remote._path(hidden_name(name, secrets.token_hex(4), "xchange-del"))
            self.jobs.append(
                _RemoveJob(
                    i,
                    name,
                    path.encode("utf-8"),
                    aside.encode("utf-8"),
                    expect[i] if expect else None,
                )
            )

    def _open(self, job: _RemoveJob) -> None:
        if job.expect is None:
            self._send(job, "remove", _REMOVE, _string(job.path))
        else:
            self._send(job, "aside", _RENAME, _string(job.path), _string(job.aside))

    def _step(self, job: _RemoveJob, step: Any, t: int, body: memoryview) -> bool:
        error = self._error(t, body, f"remove {job.name}") if step != "judge" else None
        if step == "aside":
            if isinstance(error, RemoteNotFound):
                return True  # gone already
            if error is not None:
                job.error = error
                return True
            self._send(job, "judge", _LSTAT, _string(job.aside))
            return False
        if step == "judge":
            if _same(t, body, job.expect):  # type: ignore[arg-type]
                self._send(job, "remove", _REMOVE, _string(job.aside))
            else:
                job.error = SourceChanged(
                    f"{self.remote._where()}: {job.name}: changed since it was taken; left in "
                    "place, to be taken as a new file"
                )
                self._send(job, "back", _RENAME, _string(job.aside), _string(job.path))
            return False
        if step == "remove":
            job.error = None if isinstance(error, RemoteNotFound) else error
        return True

    def _result(self, job: _RemoveJob) -> RemoteError | None:
        return job.error
