"""Shared fixtures: a clean environment, a scratch exchange, and a real sshd."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import structlog

from tests.sshd import SshServer, find_sshd, start_sshd

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples"
FORMATS = REPO / "formats"
#: The public test corpora: ../shared/corpora beside the checkout, or the folder named by
#: XCHANGE_TEST_CORPORA. Tests that need them are skipped (one line says so) without them.
CORPORA = Path(os.environ.get("XCHANGE_TEST_CORPORA") or REPO.parent / "shared" / "corpora")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No XCHANGE_* variable from the developer's shell leaks into a test."""
    for key in list(os.environ):
        if key.startswith("XCHANGE_"):
            monkeypatch.delenv(key)
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@dataclass
class Exchange:
    """A scratch copy of the demo exchange in a temporary folder."""

    root: Path
    inbox: Path
    outbox: Path
    journal: Path
    quarantine: Path

    @property
    def config(self) -> Path:
        return self.root / "xchange.toml"

    def write_config(
        self,
        target: str | None = None,
        route_extra: str = "",
        retry: str = "attempts = 2, initial = 0.01, maximum = 0.05, later = 0",
        ready: str = "settle = 0",
    ) -> Path:
        target = target or f'[endpoints.wms-outbox]\ntype = "local"\npath = "{self.outbox}"\n'
        self.config.write_text(
            f"""
formats = "{FORMATS}"

[journal]
path = "{self.journal}"

[quarantine]
path = "{self.quarantine}"

[endpoints.shop-drop]
type = "local"
path = "{self.inbox}"

{target}

[[routes]]
name = "shop-orders"
source = {{ endpoint = "shop-drop", pattern = "orders_*.csv" }}
source_layout = "shop-order-lines"
mapping = "shop-to-wms-outbound"
target_layout = "wms-outbound-order"
target = {{ endpoint = "wms-outbox", name = "WMS_OUT_{{OrderDate}}_{{OrderNo}}.xml" }}
after = {{ action = "archive", folder = "archive" }}
retry = {{ {retry} }}
ready = {{ {ready} }}
{route_extra}
""",
            encoding="utf-8",
        )
        return self.config

    def drop_sample(self, name: str = "orders_20261121.csv") -> Path:
        return Path(shutil.copy(SAMPLES / "shop-orders" / "in" / name, self.inbox / name))


@pytest.fixture
def exchange(tmp_path: Path) -> Exchange:
    ex = Exchange(
        root=tmp_path,
        inbox=tmp_path / "inbox",
        outbox=tmp_path / "outbox",
        journal=tmp_path / "state" / "journal.sqlite",
        quarantine=tmp_path / "quarantine",
    )
    ex.inbox.mkdir()
    ex.write_config()
    return ex


@pytest.fixture
def own_sshd() -> Iterator[SshServer]:
    """An sshd of this test's own, free to be stopped and started."""
    base = Path(tempfile.mkdtemp(prefix="xchange-sshd-"))
    server = start_sshd(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """A real OpenSSH sshd on 127.0.0.1 for the whole session."""
    if find_sshd() is None:
        pytest.fail(
            "OpenSSH sshd is not installed: run the test command from README.md, "
            "which installs it (apt-get install openssh-server)"
        )
    # Not under pytest's 0700 temp root: the password-login test user must reach it.
    base = Path(tempfile.mkdtemp(prefix="xchange-sshd-"))
    server = start_sshd(base)
    yield server
    server.stop()
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def sftp_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Every SFTP server kind of tests/sftpservers.py, each started once per session the
    first time a test asks for it."""
    from tests import sftpservers

    started: dict[str, sftpservers.SftpServer] = {}

    class Servers(dict):  # type: ignore[type-arg]
        def __missing__(self, kind: str) -> sftpservers.SftpServer:
            if not sftpservers.available(kind):
                pytest.fail(
                    f"the {kind} SFTP server is not installed: run the test command from "
                    "README.md (bash tests/run-all.sh), which installs it"
                )
            base = Path(tempfile.mkdtemp(prefix=f"xchange-{kind}-"))
            server = sftpservers.start(kind, base)
            started[kind] = server
            self[kind] = server
            return server

    yield Servers()
    for server in started.values():
        server.stop()
        shutil.rmtree(server.base, ignore_errors=True)


@contextmanager
def mounted_tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted on ``folder`` with ``options`` (``size=256k``, ``ro``...) for the
    length of the block; the test is skipped where mounting is not allowed (not root)."""
    import subprocess

    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small file system needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Any]:
    """A real PostgreSQL server on 127.0.0.1 for the whole session (initdb in a temporary
    folder, run as an unprivileged user), started the first time a test asks for it."""
    from tests import pg

    if not pg.available():
        pytest.fail(
            "PostgreSQL is not installed: run the test command from README.md "
            "(bash tests/run-all.sh), which installs it (apt-get install postgresql)"
        )
    server = pg.start_postgres()
    yield server
    server.stop("immediate")
    shutil.rmtree(server.base, ignore_errors=True)


def fill_disk(folder: Path) -> None:
    """Write zeros into ``folder`` until its file system is full."""
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass  # full
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def pgp_parties() -> Iterator[Any]:
    """PGP keys made for the session (tests/pgpkeys.py): us, the bank, another partner,
    a stranger; each party's agent stopped at the end."""
    from tests.pgpkeys import parties

    with parties() as made:
        yield made
