"""A real OpenSSH sshd on 127.0.0.1 for the SFTP tests.

Throwaway host and user keys, a free port, a pinned known_hosts, internal-sftp.
Nothing here talks to any address but 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

TEST_USER = "xchange-test"


def find_sshd() -> str | None:
    for candidate in (shutil.which("sshd"), "/usr/sbin/sshd", "/usr/local/sbin/sshd"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def keygen(path: Path, passphrase: str = "") -> Path:
    subprocess.run(
        [
            "ssh-keygen",
            "-q",
            "-t",
            "ed25519",
            "-N",
            passphrase,
            "-C",
            "xchange-test",
            "-f",
            str(path),
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return path


def wait_for_banner(port: int, deadline_s: float = 15.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                if s.recv(64).startswith(b"SSH-2.0"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"sshd did not answer on 127.0.0.1:{port} within {deadline_s}s")


@dataclass
class SshServer:
    """A running sshd and everything a client needs to reach it."""

    port: int
    user: str
    client_key: Path
    known_hosts: Path
    host_key: Path
    base: Path
    process: subprocess.Popen[bytes]
    config_file: Path
    log_file: Path
    password_user: str | None = None
    password: str | None = None

    @property
    def host(self) -> str:
        return "127.0.0.1"

    def folder(self, name: str, mode: int = 0o777) -> Path:
        """A fresh folder the SFTP users can write to (paths on the server are local paths)."""
        path = self.base / "data" / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(mode)
        return path

    def log(self) -> str:
        return self.log_file.read_text(errors="replace")

    def restart(self) -> None:
        """Stop and start sshd on the same port with the same keys."""
        self.stop()
        self.process = _spawn(self.config_file, self.log_file)
        wait_for_banner(self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _spawn(config: Path, log_file: Path) -> subprocess.Popen[bytes]:
    sshd = find_sshd()
    assert sshd is not None
    with open(log_file, "ab") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stdout=log, stderr=log)


#: Root-only file holding the throwaway login's random password, so that concurrent test
#: runs on one machine agree on it.
PASSWORD_FILE = Path("/root/.xchange-test-login")


def _ensure_password_user() -> tuple[str, str] | None:
    """As root, create (once per machine) a throwaway login with a random password."""
    if os.geteuid() != 0:
        return None
    try:
        fd = os.open(PASSWORD_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        password = PASSWORD_FILE.read_text().strip()
    else:
        password = secrets.token_urlsafe(18)
        with os.fdopen(fd, "w") as fh:
            fh.write(password)
    try:
        pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/bin/sh", TEST_USER],
            check=False,  # a concurrent run may have just created it
            capture_output=True,
            timeout=30,
        )
    subprocess.run(
        ["chpasswd"],
        input=f"{TEST_USER}:{password}".encode(),
        check=True,
        capture_output=True,
        timeout=30,
    )
    return TEST_USER, password


def ensure_test_user() -> tuple[str, str] | None:
    """The throwaway login (created once per machine, as root): its name and password."""
    return _ensure_password_user()


def start_sshd(base: Path, subsystem: str = "internal-sftp", max_sessions: int = 50) -> SshServer:
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    host_key = keygen(base / "host_ed25519")
    client_key = keygen(base / "client_ed25519")
    authorized = base / "authorized_keys"
    authorized.write_text((base / "client_ed25519.pub").read_text())
    authorized.chmod(0o644)
    (base / "data").mkdir(mode=0o755, exist_ok=True)
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # privilege separation dir
    password_login = _ensure_password_user()
    port = free_port()
    config = base / "sshd_config"
    config.write_text(
        "\n".join(
            [
                f"Port {port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {host_key}",
                f"PidFile {base / 'sshd.pid'}",
                f"AuthorizedKeysFile {authorized}",
                "StrictModes no",
                "UsePAM no",
                f"PasswordAuthentication {'yes' if password_login else 'no'}",
                "KbdInteractiveAuthentication no",
                "PermitRootLogin prohibit-password",
                f"Subsystem sftp {subsystem}",
                "LogLevel VERBOSE",
                "MaxStartups 200",
                f"MaxSessions {max_sessions}",
                "",
            ]
        )
    )
    known_hosts = base / "known_hosts"
    host_pub = (base / "host_ed25519.pub").read_text().split()
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    log_file = base / "sshd.log"
    process = _spawn(config, log_file)
    try:
        wait_for_banner(port)
    except RuntimeError:
        process.kill()
        raise RuntimeError(
            f"sshd failed to start:\n{log_file.read_text(errors='replace')}"
        ) from None
    return SshServer(
        port=port,
        user=pwd.getpwuid(os.geteuid()).pw_name,
        client_key=client_key,
        known_hosts=known_hosts,
        host_key=host_key,
        base=base,
        process=process,
        config_file=config,
        log_file=log_file,
        password_user=password_login[0] if password_login else None,
        password=password_login[1] if password_login else None,
    )


@contextlib.contextmanager
def running_sshd(base: Path):  # type: ignore[no-untyped-def]
    server = start_sshd(base)
    try:
        yield server
    finally:
        server.stop()
