"""A damaged journal is refused, never taken as a fresh start (which would send every file
again); two xchange instances with their own journals never share a drop folder or a
temporary name."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import Exchange
from tests.procs import xchange_argv, xchange_env
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import open_journal
from xchange.remote.base import temp_name_for
from xchange.runner import Runner

LEAVE = 'after = { action = "leave" }'


def run(exchange: Exchange, *args: str) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)])


def leave_in_place(exchange: Exchange) -> None:
    """The demo route, but sources left in place (the journal alone stops a resend)."""
    text = exchange.config.read_text()
    exchange.config.write_text(
        text.replace('after = { action = "archive", folder = "archive" }', LEAVE)
    )


def killed_run(exchange: Exchange) -> None:
    """A run killed with SIGKILL once everything is delivered (before the archive step)."""
    proc = subprocess.run(
        xchange_argv(exchange.config, "run", "--once"),
        env=xchange_env(XCHANGE_CRASH_AT="before-archive"),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == -9, proc.stderr


def outputs(exchange: Exchange) -> list[str]:
    return sorted(p.name for p in exchange.outbox.iterdir())


def test_a_journal_whose_wal_was_deleted_after_a_crash_is_refused(exchange: Exchange) -> None:
    """The run is killed; an operator "cleans up" journal.sqlite-wal. The next run refuses
    the journal with a clear message (exit 3) instead of sending every file again."""
    leave_in_place(exchange)
    exchange.drop_sample()
    killed_run(exchange)
    delivered = outputs(exchange)
    assert delivered
    wal = Path(f"{exchange.journal}-wal")
    assert wal.exists()
    wal.unlink()
    Path(f"{exchange.journal}-shm").unlink(missing_ok=True)
    result = run(exchange, "run", "--once")
    assert result.exit_code == 3, result.output
    assert "was not closed cleanly" in result.output or "holds no journal tables" in result.output
    assert "journal init --fresh" in result.output
    assert outputs(exchange) == delivered  # nothing sent again
    check = run(exchange, "journal", "check")
    assert check.exit_code == 3


def test_a_journal_emptied_to_zero_bytes_is_refused(exchange: Exchange) -> None:
    leave_in_place(exchange)
    exchange.drop_sample()
    assert run(exchange, "run", "--once").exit_code == 0
    delivered = outputs(exchange)
    for suffix in ("-wal", "-shm"):
        Path(f"{exchange.journal}{suffix}").unlink(missing_ok=True)
    exchange.journal.write_bytes(b"")
    result = run(exchange, "run", "--once")
    assert result.exit_code == 3, result.output
    assert "is an empty file (0 bytes)" in result.output
    assert outputs(exchange) == delivered
    listed = run(exchange, "journal", "list")
    assert listed.exit_code == 3 and "Traceback" not in listed.output


def test_a_journal_file_without_tables_is_refused(exchange: Exchange) -> None:
    exchange.journal.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(exchange.journal)
    db.execute("PRAGMA user_version=1")
    db.close()
    result = run(exchange, "run", "--once")
    assert result.exit_code == 3
    assert "holds no journal tables" in result.output


def test_a_fresh_journal_is_accepted_on_purpose_and_the_old_one_kept(exchange: Exchange) -> None:
    exchange.journal.parent.mkdir(parents=True, exist_ok=True)
    exchange.journal.write_bytes(b"")
    result = run(exchange, "journal", "init", "--fresh", "--reason", "disk replaced")
    assert result.exit_code == 0, result.output
    assert "started afresh" in result.output
    assert list(exchange.journal.parent.glob("journal.sqlite.damaged-*"))
    (noted,) = run(exchange, "journal", "actions").stdout.splitlines()
    assert " journal init --fresh (the old one kept as journal.sqlite.damaged-" in noted
    assert noted.endswith(": disk replaced")
    exchange.drop_sample()
    assert run(exchange, "run", "--once").exit_code == 0
    assert run(exchange, "journal", "check").exit_code == 0


def test_a_clean_journal_survives_crashes_and_a_copy_of_its_main_file_alone_is_complete(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A crash leaves the -wal file, and the next run opens as usual; after a run, a copy
    of the main file alone (a backup that missed the -wal) has every record; `journal
    backup` makes a consistent copy while the journal is open."""
    leave_in_place(exchange)
    exchange.drop_sample()
    killed_run(exchange)
    again = run(exchange, "run", "--once")
    assert again.exit_code == 0, again.output
    copy = tmp_path / "main-only.sqlite"
    shutil.copy(exchange.journal, copy)
    rows = sqlite3.connect(copy).execute("SELECT count(*) FROM files").fetchone()[0]
    assert rows == 1
    backup = tmp_path / "backup.sqlite"
    result = run(exchange, "journal", "backup", str(backup))
    assert result.exit_code == 0, result.output
    assert sqlite3.connect(backup).execute("SELECT count(*) FROM files").fetchone()[0] == 1
    assert (backup.stat().st_mode & 0o077) == 0


# --------------------------------------------------------------------------- two instances


def second(exchange: Exchange, tmp_path: Path, target: str | None = None) -> Path:
    """The same drop folder and target under a second configuration with its own journal."""
    other = tmp_path / "other.toml"
    text = exchange.config.read_text().replace(
        str(exchange.journal), str(tmp_path / "other" / "journal.sqlite")
    )
    other.write_text(text)
    return other


def test_a_second_instance_with_its_own_journal_is_refused_on_a_local_drop(
    exchange: Exchange, tmp_path: Path
) -> None:
    """While one instance runs, another with another journal on the same drop folder
    refuses that route with a clear reason (exit 3) and touches nothing."""
    first = Runner(load_config(exchange.config), open_journal(load_config(exchange.config).journal))
    (result,) = first.run_once()  # takes the drop folder (nothing to do yet)
    assert result.error is None
    exchange.drop_sample()
    other = second(exchange, tmp_path)
    refused = CliRunner().invoke(main, ["run", "--once", "--config", str(other)])
    assert refused.exit_code == 3, refused.output
    assert "another xchange takes files from this folder" in refused.output
    assert (exchange.inbox / "orders_20261121.csv").exists()
    first.close()
    first.journal.close()
    # Once the first is gone, the folder is free for the other.
    taken = CliRunner().invoke(main, ["run", "--once", "--config", str(other)])
    assert taken.exit_code == 0, taken.output


@pytest.mark.sftp
def test_a_second_instance_is_refused_on_an_sftp_drop(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    drop = sshd.folder("two-instances")
    exchange.write_config()
    exchange.config.write_text(
        exchange.config.read_text().replace(
            f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"\n',
            sftp_target_toml(sshd, drop).replace("wms-outbox", "shop-drop"),
        )
    )
    first = Runner(load_config(exchange.config), open_journal(load_config(exchange.config).journal))
    (result,) = first.run_once()
    assert result.error is None
    assert (drop / ".xchange-drop").exists()
    other = second(exchange, tmp_path)
    refused = CliRunner().invoke(main, ["run", "--once", "--config", str(other)])
    assert refused.exit_code == 3, refused.output
    assert "another xchange takes files from this folder" in refused.output
    first.close()
    first.journal.close()
    assert not (drop / ".xchange-drop").exists()


def test_two_journals_never_share_a_temporary_name(exchange: Exchange, tmp_path: Path) -> None:
    """The resumable temporary name is the same for every try of one journal, and another
    for any other journal (two instances never truncate or remove each other's)."""
    from xchange.journal import FileKey
    from xchange.sink import Output

    names = set()
    for folder in ("a", "b"):
        journal = open_journal(
            load_config(exchange.config).journal.model_copy(
                update={"path": tmp_path / folder / "journal.sqlite"}
            )
        )
        runner = Runner(load_config(exchange.config), journal)
        claim = journal.claim(
            FileKey("shop-orders", "shop-drop", "x.csv", 1, 1, "ab" * 32),
            layout_version="1",
            mapping_version="1",
        )
        out = Output("x.xml", 1, "cd" * 32, 1)
        token = runner.transfer.delivery.temp_token(claim.record, out)
        assert token == runner.transfer.delivery.temp_token(claim.record, out)
        names.add(temp_name_for("x.xml", token))
        journal.close()
    assert len(names) == 2


def test_temporary_names_stay_within_255_bytes_whatever_the_final_name(
    exchange: Exchange,
) -> None:
    """A 244-byte output name (CJK) gets a temporary name the file system accepts, and is
    delivered, not "retry later" forever."""
    long = "订" * 80 + ".csv"  # 244 bytes in UTF-8
    assert len(long.encode()) == 244
    temp = temp_name_for(long, "t0k3n12345678901234")
    assert len(temp.encode()) <= 255 and temp.startswith(".") and temp.endswith(".xchange-part")
    assert temp != temp_name_for("订" * 80 + ".cs", "t0k3n12345678901234")
    exchange.config.write_text(
        exchange.config.read_text()
        + """
[[routes]]
name = "copy"
source = { endpoint = "shop-drop", pattern = "*.dat" }
mapping = "copy"
target = { endpoint = "wms-outbox", name = "%s{source_stem}.csv" }
after = { action = "delete" }
ready = { settle = 0 }
"""
        % ("订" * 80)
    )
    (exchange.inbox / "x.dat").write_bytes(b"data")
    exchange.outbox.mkdir()
    result = run(exchange, "run", "--once", "--route", "copy")
    assert result.exit_code == 0, result.output
    name = "订" * 80 + "x.csv"
    assert (exchange.outbox / name).read_bytes() == b"data"


def test_a_drop_folder_taken_by_another_instance_is_said_once_while_it_lasts(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A daemon looks at a route every poll: the other instance's hold on the folder was
    logged at error on every look; it is said once, and again once it has ended and
    come back. The route's result says it every look (and alerts are windowed)."""
    from structlog.testing import capture_logs

    first = Runner(load_config(exchange.config), open_journal(load_config(exchange.config).journal))
    first.run_once()
    config = load_config(second(exchange, tmp_path))
    other = Runner(config, open_journal(config.journal))
    try:
        with capture_logs() as logs:
            results = [other.run_route(config.routes[0]) for _ in range(5)]
        assert all(r.error_kind == "drop-shared" for r in results)
        said = [e for e in logs if e["event"] == "route.drop_shared"]
        assert [e["log_level"] for e in said] == ["error"] + ["debug"] * 4
    finally:
        other.close()
        other.journal.close()
        first.close()
        first.journal.close()
