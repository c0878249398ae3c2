"""The SFTP servers partners run, each started on 127.0.0.1 for the interop tests.

Each kind runs once per test session on a free port with throwaway keys and a pinned
known_hosts: OpenSSH (the reference), OpenSSH with its extensions turned off (``-P``),
Green End's gesftpserver behind sshd (answers writes out of order), OpenSSH read-only
(``-R``), rclone's ``serve
sftp`` (a plain rename overwrites) and ProFTPD's mod_sftp (refuses renames onto a name).
All are Debian packages, installed by ``tests/run-all.sh`` when missing.

Paths: every server here shows the same folder tree, ``base/data``, at the same path
(``SftpServer.remote_path``), so a test puts a file in a local folder and names it on the
server the same way whatever the kind.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tests.sshd import TEST_USER, free_port, keygen, start_sshd, wait_for_banner

GESFTPSERVER = "/usr/libexec/gesftpserver"
PROFTPD = "/usr/sbin/proftpd"
#: Every OpenSSH extension ``internal-sftp -P`` can turn off (short names).
OPENSSH_EXTENSIONS = (
    "posix-rename,hardlink,fsync,statvfs,fstatvfs,lsetstat,limits,copy-data,expand-path,"
    "home-directory,users-groups-by-id"
)


@dataclass
class SftpServer:
    """A running SFTP server and what a client needs to reach it."""

    kind: str
    port: int
    user: str
    client_key: Path
    known_hosts: Path
    base: Path
    stop_fn: Callable[[], None]
    #: The server's quirks, as the tests expect them.
    overwrites_on_rename: bool = False
    posix_rename: bool = True
    keeps_modes: bool = True
    #: rclone maps its served folder to "/": the same tree appears under another path.
    prefix: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def folder(self, name: str) -> Path:
        """A fresh local folder the server's user can write to."""
        path = self.base / "data" / name
        if path.exists():
            shutil.rmtree(path)
        path.mkdir(parents=True)
        path.chmod(0o777)
        return path

    def remote_path(self, local: Path) -> str:
        """How the server names a local folder under ``base/data``."""
        if not self.prefix:
            return str(local)
        return "/" + str(local.relative_to(self.base / "data"))

    def stop(self) -> None:
        self.stop_fn()


def available(kind: str) -> bool:
    if kind in ("openssh", "openssh-noext", "openssh-readonly"):
        return shutil.which("sshd") is not None or os.path.exists("/usr/sbin/sshd")
    if kind == "gesftpserver":
        return os.path.exists(GESFTPSERVER)
    if kind == "rclone":
        return shutil.which("rclone") is not None
    if kind == "proftpd":
        return os.path.exists(PROFTPD) and os.path.exists("/usr/lib/proftpd/mod_sftp.so")
    raise ValueError(kind)


def start(kind: str, base: Path, *, dir_cache: str = "0s") -> SftpServer:
    """Start one server of ``kind`` with its files under ``base``. ``dir_cache`` is rclone's
    directory cache time: none by default, so that it sees the files tests put in its folder
    behind its back (which makes each of its lookups list the folder: benchmarks give it
    its default, 5m)."""
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    (base / "data").mkdir(mode=0o755, exist_ok=True)
    if kind == "openssh":
        return _from_sshd(kind, base, "internal-sftp")
    if kind == "openssh-noext":
        server = _from_sshd(kind, base, f"internal-sftp -P {OPENSSH_EXTENSIONS}")
        server.posix_rename = False
        return server
    if kind == "gesftpserver":
        return _from_sshd(kind, base, GESFTPSERVER)
    if kind == "openssh-readonly":
        return _from_sshd(kind, base, "internal-sftp -R")
    if kind == "rclone":
        return _rclone(base, dir_cache)
    if kind == "proftpd":
        return _proftpd(base)
    raise ValueError(kind)


def _from_sshd(kind: str, base: Path, subsystem: str) -> SftpServer:
    sshd = start_sshd(base, subsystem=subsystem)
    return SftpServer(
        kind=kind,
        port=sshd.port,
        user=sshd.user,
        client_key=sshd.client_key,
        known_hosts=sshd.known_hosts,
        base=base,
        stop_fn=sshd.stop,
    )


def _pinned(base: Path, port: int, public_key: Path) -> Path:
    algorithm, key = public_key.read_text().split()[:2]
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {algorithm} {key}\n")
    return known_hosts


def _terminate(process: subprocess.Popen[bytes]) -> Callable[[], None]:
    def stop() -> None:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)

    return stop


def _rclone(base: Path, dir_cache: str) -> SftpServer:
    host_key = keygen(base / "host_ed25519")
    client_key = keygen(base / "client_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_ed25519.pub").read_text())
    port = free_port()
    log = open(base / "rclone.log", "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen(
        [
            "rclone",
            "serve",
            "sftp",
            str(base / "data"),
            "--addr",
            f"127.0.0.1:{port}",
            "--key",
            str(host_key),
            "--user",
            "xchange",
            "--authorized-keys",
            str(authorized),
            "--config",
            "/dev/null",
            "--dir-cache-time",
            dir_cache,
            "--log-level",
            "INFO",
        ],
        stdout=log,
        stderr=log,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(base)},
    )
    log.close()
    _started(process, port, base / "rclone.log")
    return SftpServer(
        kind="rclone",
        port=port,
        user="xchange",
        client_key=client_key,
        known_hosts=_pinned(base, port, base / "host_ed25519.pub"),
        base=base,
        stop_fn=_terminate(process),
        overwrites_on_rename=True,
        keeps_modes=False,
        prefix="/",
    )


def _proftpd(base: Path) -> SftpServer:
    if os.geteuid() != 0:
        raise RuntimeError("ProFTPD's mod_sftp tests need root (it switches to the test user)")
    from tests.sshd import ensure_test_user

    ensure_test_user()
    # ProFTPD changes into the user's home at login: it must exist.
    entry = pwd.getpwnam(TEST_USER)
    home = Path(entry.pw_dir)
    if not home.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        os.chown(home, entry.pw_uid, entry.pw_gid)
    host_key = base / "host_ecdsa"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ecdsa", "-m", "PEM", "-N", "", "-f", str(host_key)],
        check=True,
        capture_output=True,
        timeout=30,
    )
    client_key = keygen(base / "client_ed25519")
    # mod_sftp reads authorized keys in RFC 4716 form, one file per user.
    keys = base / "keys"
    keys.mkdir(mode=0o755, exist_ok=True)
    converted = subprocess.run(
        ["ssh-keygen", "-e", "-f", str(base / "client_ed25519.pub")],
        check=True,
        capture_output=True,
        timeout=30,
    ).stdout
    (keys / TEST_USER).write_bytes(converted)
    (keys / TEST_USER).chmod(0o644)
    port = free_port()
    config = base / "proftpd.conf"
    config.write_text(
        "\n".join(
            [
                "ServerType standalone",
                "DefaultServer off",
                "Port 0",
                "UseIPv6 off",
                "DelayTable none",
                "WtmpLog off",
                "MaxInstances 100",
                "User nobody",
                "Group nogroup",
                f"PidFile {base / 'proftpd.pid'}",
                f"ScoreboardFile {base / 'proftpd.scoreboard'}",
                "<IfModule !mod_sftp.c>",
                "  LoadModule mod_sftp.c",
                "</IfModule>",
                "<VirtualHost 127.0.0.1>",
                f"  Port {port}",
                "  SFTPEngine on",
                f"  SFTPLog {base / 'sftp.log'}",
                f"  SFTPHostKey {host_key}",
                "  SFTPAuthMethods publickey",
                f"  SFTPAuthorizedUserKeys file:{keys}/%u",
                "  RequireValidShell off",
                "  AllowOverwrite on",
                "  Umask 022",
                "</VirtualHost>",
                "",
            ]
        )
    )
    log_file = base / "proftpd.log"
    log = open(log_file, "ab")  # noqa: SIM115 - the child keeps it open
    process = subprocess.Popen([PROFTPD, "-n", "-q", "-c", str(config)], stdout=log, stderr=log)
    log.close()
    _started(process, port, log_file)
    return SftpServer(
        kind="proftpd",
        port=port,
        user=TEST_USER,
        client_key=client_key,
        known_hosts=_pinned(base, port, base / "host_ecdsa.pub"),
        base=base,
        stop_fn=_terminate(process),
    )


def _started(process: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    try:
        wait_for_banner(port)
    except RuntimeError:
        process.kill()
        raise RuntimeError(
            f"the server did not start:\n{log_file.read_text(errors='replace')}"
        ) from None


def user_name() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name
