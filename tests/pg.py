"""A real PostgreSQL server on 127.0.0.1 for the journal tests.

``initdb`` in a temporary folder, run as an unprivileged user (``postgres`` when the tests
run as root), a free port, password authentication (scram) for the test role, the
socket in the same folder. Stopped at the end of the session.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from tests.sshd import free_port

ROLE = "xchange"


def find_bin(name: str) -> str | None:
    """A PostgreSQL server program (Debian keeps them under /usr/lib/postgresql/N/bin)."""
    for candidate in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True):
        if os.access(candidate, os.X_OK):
            return candidate
    return shutil.which(name)


def available() -> bool:
    return find_bin("initdb") is not None and find_bin("pg_ctl") is not None


@dataclass
class PgServer:
    base: Path
    port: int
    password: str
    owner: str | None
    #: fsync and synchronous commit on (benchmarks); off for the tests' speed.
    durable: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str = "xchange") -> str:
        """The URL without its password (given through an environment variable)."""
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def dsn(self, database: str = "xchange") -> str:
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _as_owner(self, argv: list[str]) -> list[str]:
        return ["runuser", "-u", self.owner, "--", *argv] if self.owner else argv

    def ctl(self, *args: str, timeout: float = 60) -> None:
        pg_ctl = find_bin("pg_ctl")
        assert pg_ctl is not None
        subprocess.run(
            self._as_owner([pg_ctl, "-D", str(self.data), *args]),
            check=True,
            capture_output=True,
            timeout=timeout,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
        options += "-c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self.ctl("-o", options, "-l", str(self.base / "server.log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.ctl("-m", mode, "-w", "stop")

    def restart(self) -> None:
        self.stop()
        self.start()

    def psql(self, sql: str, database: str = "postgres") -> str:
        psql = find_bin("psql")
        assert psql is not None
        done = subprocess.run(
            [psql, "-X", "-q", "-A", "-t", "-d", self.dsn(database), "-c", sql],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return done.stdout

    def create_database(self, name: str) -> str:
        """A fresh database for one test; its URL (without the password)."""
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)


def start_postgres(*, durable: bool = False) -> PgServer:
    initdb = find_bin("initdb")
    assert initdb is not None
    owner = None
    if os.geteuid() == 0:
        owner = "postgres"
        pwd.getpwnam(owner)  # Debian's package creates it
    base = Path(tempfile.mkdtemp(prefix="xchange-pg-"))
    password = secrets.token_hex(12)
    pwfile = base / "pw"
    pwfile.write_text(password + "\n")
    if owner:
        info = pwd.getpwnam(owner)
        os.chown(base, info.pw_uid, info.pw_gid)
        os.chown(pwfile, info.pw_uid, info.pw_gid)
    os.chmod(base, 0o700)
    server = PgServer(base, free_port(), password, owner, durable)
    subprocess.run(
        server._as_owner(
            [
                initdb,
                "-D",
                str(server.data),
                "-U",
                ROLE,
                "--auth=scram-sha-256",
                f"--pwfile={pwfile}",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        ),
        check=True,
        capture_output=True,
        timeout=120,
    )
    pwfile.unlink()
    server.start()
    end = time.monotonic() + 30
    while True:
        try:
            server.psql("SELECT 1")
            break
        except subprocess.CalledProcessError:
            if time.monotonic() > end:
                raise
            time.sleep(0.2)
    server.psql('CREATE DATABASE "xchange"')
    return server


__all__ = ["PgServer", "available", "start_postgres"]
