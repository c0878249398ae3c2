"""PGP out: each output encrypted to the partner's pinned key and signed with ours; the
partner decrypts it and verifies our signature with its own gpg. Encrypted once per
output, so a delivery taken up again after a crash sends the same bytes, once; the
passphrase never reaches gpg's argv or environment."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest

from tests.conftest import SAMPLES
from tests.pgpkeys import PASSPHRASE, Parties, bank_config
from tests.procs import run_once
from tests.sftp_routes import endpoint_toml
from tests.sshd import SshServer
from xchange.config import load_config
from xchange.journal import FileRecord, State, open_journal

SAMPLE = SAMPLES / "bank-statements" / "in" / "statement_20261205.csv"
GOLDEN = (SAMPLES / "bank-statements" / "expected" / "ERP_BANK_statement_20261205.csv").read_bytes()


@pytest.fixture
def parties(pgp_parties: Parties, monkeypatch: pytest.MonkeyPatch) -> Parties:
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", PASSPHRASE)
    return pgp_parties


def only_record(config: Path) -> FileRecord:
    journal = open_journal(load_config(config).journal)
    try:
        (record,) = journal.query()
        return record
    finally:
        journal.close()


def opened_by_the_bank(parties: Parties, sealed: bytes, scratch: Path) -> bytes:
    """What the bank reads of a file we sent: decrypted with its key, our signature
    verified (VALIDSIG with our primary key's fingerprint) by its own gpg."""
    opened = scratch / "opened-by-the-bank"
    opened.unlink(missing_ok=True)
    status = parties.bank.gpg(
        "--status-fd", "1", "--decrypt", "--output", str(opened), data=sealed
    ).decode()
    valid = [line.split() for line in status.splitlines() if " VALIDSIG " in line]
    assert valid and valid[0][-1] == parties.us.fingerprint, status
    assert "GOODMDC" in status and "DECRYPTION_OKAY" in status
    return opened.read_bytes()


@pytest.mark.sftp
def test_round_trip_over_sftp_the_bank_reads_and_verifies_what_we_send(
    tmp_path: Path, parties: Parties, sshd: SshServer
) -> None:
    """The bank drops its statement encrypted and signed on an SFTP server; xchange
    decrypts, verifies, converts, and delivers the ERP file encrypted to the bank and
    signed with our key over SFTP; the bank's gpg decrypts it to the golden bytes."""
    drop, outbox = sshd.folder("pgp-drop"), sshd.folder("pgp-out")
    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.bank.fingerprint}"] }}',
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
        source_endpoint=endpoint_toml("bank-drop", sshd, drop),
        target_endpoint=endpoint_toml("erp-inbox", sshd, outbox),
    )
    (drop / "statement_20261205.csv.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    ran = run_once(config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert sorted(os.listdir(outbox)) == ["ERP_BANK_statement_20261205.csv.pgp"]
    sealed = (outbox / "ERP_BANK_statement_20261205.csv.pgp").read_bytes()
    assert opened_by_the_bank(parties, sealed, tmp_path) == GOLDEN
    record = only_record(config)
    assert record.state == State.ARCHIVED
    assert [o.path for o in record.outputs] == ["ERP_BANK_statement_20261205.csv.pgp"]
    assert PASSPHRASE not in ran.stdout + ran.stderr


def test_armored_output_unsigned_where_the_route_says(tmp_path: Path, parties: Parties) -> None:
    """armor = true, sign = false, name = "{name}.asc": an ASCII-armoured message with
    no signature, under that name; the bank decrypts it to the golden bytes."""
    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=None,
        target_pgp=(
            f'{{ encrypt_to = ["{parties.bank.fingerprint}"], sign = false, armor = true, '
            'name = "{name}.asc" }'
        ),
    )
    (tmp_path / "inbox" / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    ran = run_once(config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    sealed = (tmp_path / "outbox" / "ERP_BANK_statement_20261205.csv.asc").read_bytes()
    assert sealed.startswith(b"-----BEGIN PGP MESSAGE-----")
    opened = tmp_path / "opened"
    done = parties.bank.gpg("--status-fd", "1", "--decrypt", "--output", str(opened), data=sealed)
    assert opened.read_bytes() == GOLDEN
    assert b"DECRYPTION_OKAY" in done and b"NEWSIG" not in done


def test_a_dry_run_of_sending_again_names_the_encrypted_outputs_and_says_why_not_compared(
    tmp_path: Path, parties: Parties
) -> None:
    """``reprocess --dry-run`` names what would be delivered as it would be (``.pgp``),
    finds what was delivered under that name, and says why it is not compared."""
    from click.testing import CliRunner

    from xchange.cli import main

    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=None,
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
    )
    (tmp_path / "inbox" / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    ran = run_once(config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    record = only_record(config)
    dry = CliRunner().invoke(
        main, ["reprocess", str(record.id), "--force", "--dry-run", "--config", str(config)]
    )
    assert dry.exit_code == 0, dry.output
    name = "ERP_BANK_statement_20261205.csv.pgp"
    assert f": would deliver {name}" in dry.output, dry.output
    assert f"  {name}: delivered before; encrypted: its bytes differ" in dry.output


def test_killed_after_the_rename_the_restart_finds_the_same_encrypted_bytes(
    tmp_path: Path, parties: Parties
) -> None:
    """SIGKILL after the encrypted output is under its final name, before the journal
    knows: the restart recognises it on the target (the very bytes, kept sealed for the
    file) instead of refusing the taken name, and delivers it once."""
    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=None,
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
    )
    (tmp_path / "inbox" / SAMPLE.name).write_bytes(SAMPLE.read_bytes())
    crashed = run_once(config, "after-rename")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    first = (tmp_path / "outbox" / "ERP_BANK_statement_20261205.csv.pgp").read_bytes()
    resumed = run_once(config)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert sorted(os.listdir(tmp_path / "outbox")) == ["ERP_BANK_statement_20261205.csv.pgp"]
    assert (tmp_path / "outbox" / "ERP_BANK_statement_20261205.csv.pgp").read_bytes() == first
    assert opened_by_the_bank(parties, first, tmp_path) == GOLDEN
    record = only_record(config)
    assert record.state == State.ARCHIVED
    assert [o.path for o in record.outputs] == ["ERP_BANK_statement_20261205.csv.pgp"]
    assert not list((tmp_path / "var" / "scratch" / "sealed").iterdir())


def test_the_passphrase_reaches_gpg_on_a_pipe_never_in_argv_or_environment(
    tmp_path: Path, parties: Parties
) -> None:
    """gpg as a stand-in program that writes down its argv, its environment and what
    its --passphrase-fd holds: the passphrase is only on that descriptor; the child's
    environment has nothing of the daemon's (no PGP_TEST_PASSPHRASE)."""
    seen = tmp_path / "seen"
    real = "/usr/bin/gpg"
    stand_in = tmp_path / "gpg"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import os, sys\n"
        f"seen = open({str(seen)!r}, 'a')\n"
        "args = sys.argv[1:]\n"
        "fd = args[args.index('--passphrase-fd') + 1] if '--passphrase-fd' in args else None\n"
        "piped = os.read(int(fd), 4096).decode() if fd else ''\n"
        "seen.write(repr((args, dict(os.environ), piped)) + '\\n')\n"
        "seen.close()\n"
        "if fd:\n"
        "    r, w = os.pipe(); os.write(w, piped.encode()); os.close(w)\n"
        "    args[args.index('--passphrase-fd') + 1] = str(r)\n"
        "    os.set_inheritable(r, True)\n"
        f"os.execv({real!r}, [{real!r}, *args])\n",
        encoding="utf-8",
    )
    stand_in.chmod(stat.S_IRWXU)
    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.bank.fingerprint}"] }}',
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
        pgp_extra=f'gpg = "{stand_in}"',
    )
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    ran = run_once(config)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    runs = [eval(line) for line in seen.read_text().splitlines()]  # noqa: S307 - our own repr
    assert len(runs) >= 3  # import, listings, decrypt, encrypt
    piped = [p for _, _, p in runs if p]
    assert piped and all(p == PASSPHRASE + "\n" for p in piped)
    for args, env, _ in runs:
        assert not any(PASSPHRASE in a for a in args)
        assert not any(PASSPHRASE in v for v in env.values())
        assert set(env) <= {"PATH", "LC_ALL", "HOME", "GNUPGHOME"}
    assert (tmp_path / "outbox" / "ERP_BANK_statement_20261205.csv.pgp").exists()
