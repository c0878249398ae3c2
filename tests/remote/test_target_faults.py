"""Target trouble: permission denied, a missing folder, a full disk. Each is transient:
alerted, retried at a later run, delivered when the cause goes away."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Exchange, mounted_tmpfs
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main

pytestmark = pytest.mark.sftp

ROUTE = """
[[routes]]
name = "copy"
source = { endpoint = "shop-drop", pattern = "*.bin" }
mapping = "copy"
target = { endpoint = "wms-outbox", name = "{source_name}" }
after = { action = "delete" }
ready = { settle = 0 }
retry = { attempts = 1, later = 0 }
"""


def copy_to(exchange: Exchange, target_toml: str) -> None:
    exchange.write_config(target=target_toml)
    exchange.config.write_text(exchange.config.read_text() + ROUTE)


def run(exchange: Exchange) -> Result:
    return CliRunner().invoke(
        main,
        [
            "--log-format",
            "json",
            "run",
            "--once",
            "--route",
            "copy",
            "--config",
            str(exchange.config),
        ],
        env={"XCHANGE_TEST_PW": os.environ.get("XCHANGE_TEST_PW", "")},
    )


def password_target(sshd: SshServer, folder: Path) -> str:
    return (
        sftp_target_toml(sshd, folder)
        .replace(f'user = "{sshd.user}"', f'user = "{sshd.password_user}"')
        .replace(f'key_file = "{sshd.client_key}"', 'password_env = "XCHANGE_TEST_PW"')
    )


def test_permission_denied_then_granted(
    exchange: Exchange, sshd: SshServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only target folder: transient 'permission', alerted, delivered once writable."""
    if sshd.password_user is None:
        pytest.skip("needs the throwaway non-root login (root ignores folder permissions)")
    monkeypatch.setenv("XCHANGE_TEST_PW", sshd.password or "")
    folder = sshd.folder("read-only", mode=0o555)
    copy_to(exchange, password_target(sshd, folder))
    (exchange.inbox / "a.bin").write_bytes(b"payload")
    denied = run(exchange)
    assert denied.exit_code == 3, denied.output
    assert '"cause": "permission"' in denied.stderr
    assert '"event": "alert.sent"' in denied.stderr
    assert "1 retry-later" in denied.stdout
    folder.chmod(0o777)
    granted = run(exchange)
    assert granted.exit_code == 0, granted.output
    assert (folder / "a.bin").read_bytes() == b"payload"
    assert '"kind": "recovered"' in granted.stderr


def test_a_missing_target_folder_is_created(exchange: Exchange, sshd: SshServer) -> None:
    """The partner's inbox folder does not exist yet: it is made, then the file delivered."""
    folder = sshd.folder("parent") / "inbox" / "today"
    copy_to(exchange, sftp_target_toml(sshd, folder))
    (exchange.inbox / "a.bin").write_bytes(b"payload")
    result = run(exchange)
    assert result.exit_code == 0, result.output
    assert (folder / "a.bin").read_bytes() == b"payload"


@pytest.fixture
def small_disk(sshd: SshServer) -> Iterator[Path]:
    """A 256 KiB tmpfs as the target folder (root only)."""
    with mounted_tmpfs(sshd.folder("small-disk"), "size=256k,mode=0777") as folder:
        yield folder


def test_a_full_target_disk_is_transient(
    exchange: Exchange, sshd: SshServer, small_disk: Path
) -> None:
    """No space left: the upload fails cleanly (no partial file), is retried later, and is
    delivered once there is room."""
    copy_to(exchange, sftp_target_toml(sshd, small_disk))
    filler = small_disk / "filler"
    filler.write_bytes(b"x" * (200 * 1024))
    payload = os.urandom(100 * 1024)
    (exchange.inbox / "a.bin").write_bytes(payload)
    full = run(exchange)
    assert full.exit_code == 3, full.output
    assert sorted(os.listdir(small_disk)) == ["filler"]  # nothing partial, not even hidden
    # SFTP says only "Failure": the reason says what that most often means.
    assert "the target's disk is full" in full.output, full.output
    # ... with the upload's size and the room the server says it has (statvfs@openssh.com)
    assert "102,400 bytes to write" in full.output and "bytes free there" in full.output
    filler.unlink()
    roomy = run(exchange)
    assert roomy.exit_code == 0, roomy.output
    assert (small_disk / "a.bin").read_bytes() == payload
