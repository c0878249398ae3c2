"""PGP in: a bank's statement, encrypted to our key and signed with the bank's, is
decrypted, its signature checked against the pinned key, and converted byte for byte;
whatever is wrong is quarantined with the bytes received and a reason that names the
key seen, and the other files go on."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.conftest import SAMPLES
from tests.pgpkeys import PASSPHRASE, Parties, bank_config
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import FileRecord, State, open_journal

SAMPLE = SAMPLES / "bank-statements" / "in" / "statement_20261205.csv"
EXPECTED = SAMPLES / "bank-statements" / "expected"


def run_once(config: Path) -> Result:
    return CliRunner().invoke(
        main, ["--log-format", "json", "run", "--once", "--config", str(config)]
    )


def records(config: Path) -> dict[str, FileRecord]:
    journal = open_journal(load_config(config).journal)
    try:
        return {r.path: r for r in journal.query()}
    finally:
        journal.close()


@pytest.fixture
def parties(pgp_parties: Parties, monkeypatch: pytest.MonkeyPatch) -> Parties:
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", PASSPHRASE)
    return pgp_parties


def exchange(tmp_path: Path, parties: Parties, source_pgp: str | None = None) -> Path:
    keyring = parties.keyring(tmp_path / "keys")
    pinned = f'{{ signed_by = ["{parties.bank.fingerprint}"] }}'
    return bank_config(
        tmp_path, keyring, us=parties.us.fingerprint, source_pgp=source_pgp or pinned
    )


def test_the_banks_signed_statement_is_decrypted_and_converted_byte_for_byte(
    tmp_path: Path, parties: Parties
) -> None:
    """The golden exchange: the sample encrypted to us and signed by the bank becomes
    the ERP journal file, byte for byte; the journal keeps the bytes received (their
    sha256), and the archive holds them as received."""
    config = exchange(tmp_path, parties)
    sealed = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(sealed)
    result = run_once(config)
    assert result.exit_code == 0, result.output
    delivered = {p.name: p.read_bytes() for p in (tmp_path / "outbox").iterdir()}
    assert delivered == {p.name: p.read_bytes() for p in EXPECTED.iterdir()}
    (record,) = records(config).values()
    assert record.state == State.ARCHIVED
    assert record.size == len(sealed)
    assert record.sha256 == hashlib.sha256(sealed).hexdigest()
    archived = tmp_path / "inbox" / "archive" / "statement_20261205.csv.pgp"
    assert archived.read_bytes() == sealed
    events = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    assert any(
        e["event"] == "pgp.decrypted" and e["signed_by"] == parties.bank.fingerprint for e in events
    )
    assert PASSPHRASE not in result.output + result.stderr


def hostile(parties: Parties) -> dict[str, tuple[bytes, str]]:
    """Each hostile file: its bytes and what its reason must say."""
    data = SAMPLE.read_bytes()
    good = parties.bank.encrypt(data, [parties.us])
    tampered = bytearray(good)
    tampered[len(tampered) // 2] ^= 0x01
    return {
        "statement_other.csv.pgp": (
            # in the keyring, but not pinned for this route
            parties.other.encrypt(data, [parties.us]),
            f"signed by {parties.other.fingerprint}, which is not pinned for this route",
        ),
        "statement_stranger.csv.pgp": (
            # a key not in the keyring at all
            parties.stranger.encrypt(data, [parties.us]),
            f"signed by {parties.stranger.fingerprint}, which is not in the keyring",
        ),
        "statement_unsigned.csv.pgp": (
            parties.bank.encrypt(data, [parties.us], sign=False),
            f"not signed; the route requires a signature by {parties.bank.fingerprint}",
        ),
        "statement_tampered.csv.pgp": (
            bytes(tampered),
            "cannot be decrypted: corrupt or tampered",
        ),
        "statement_not_ours.csv.pgp": (
            # signed by the bank, but encrypted to another key, not to us
            parties.bank.encrypt(data, [parties.stranger]),
            f"not to our key {parties.us.fingerprint}",
        ),
        "statement_no_mdc.csv.pgp": (
            # no modification detection code (RFC 2440 style), a legacy cipher
            parties.bank.encrypt(data, [parties.us], extra=("--rfc2440", "--cipher-algo", "CAST5")),
            "not integrity-protected (no modification detection code)",
        ),
        "statement_no_mdc_aes.csv.pgp": (
            parties.bank.encrypt(
                data, [parties.us], extra=("--rfc2440", "--cipher-algo", "AES256")
            ),
            "not integrity-protected (no modification detection code)",
        ),
        "statement_plain.csv": (data, "not PGP-encrypted data"),
        "statement_symmetric.csv.pgp": (
            # with a passphrase, not to our key: gpg tries ours on it, and fails
            dataclasses.replace(parties.us, passphrase="not ours").gpg(
                "--symmetric", "--output", "-", data=data
            ),
            "encrypted with a passphrase (symmetric), not to our key",
        ),
        "statement_symmetric_ours.csv.pgp": (
            # with our own key's passphrase: gpg would open it; not encrypted to our key
            parties.us.gpg("--symmetric", "--output", "-", data=data),
            "encrypted with a passphrase (symmetric), not to our key",
        ),
        "statement_signed_only.csv.pgp": (
            parties.bank.gpg("--sign", "--output", "-", data=data),
            "not PGP-encrypted data",
        ),
    }


def test_hostile_files_are_quarantined_with_their_bytes_and_a_reason_naming_the_key(
    tmp_path: Path, parties: Parties
) -> None:
    """Signed by an unpinned key, by an unknown key, unsigned, tampered, encrypted to
    another key, not encrypted, only signed: each quarantined with the bytes received and
    a located reason; a good statement beside them is delivered."""
    config = exchange(tmp_path, parties)
    cases = hostile(parties)
    for name, (data, _) in cases.items():
        (tmp_path / "inbox" / name).write_bytes(data)
    good = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(good)
    result = run_once(config)
    assert result.exit_code != 0 or "quarantined" in result.stdout, result.output
    found = records(config)
    assert found["statement_20261205.csv.pgp"].state == State.ARCHIVED
    for name, (data, reason) in cases.items():
        record = found[name]
        assert record.state == State.QUARANTINED, name
        assert record.error_kind == "pgp", (name, record.error_message)
        assert reason in (record.error_message or ""), (name, record.error_message)
        assert Path(record.quarantine_path or "").read_bytes() == data, name
        assert not (tmp_path / "inbox" / name).exists()
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["ERP_BANK_statement_20261205.csv"]
    assert not list((tmp_path / "var" / "scratch").rglob("*.plain"))


def test_an_unsigned_statement_is_taken_where_the_route_makes_the_signature_optional(
    tmp_path: Path, parties: Parties
) -> None:
    """signature = "optional": an unsigned file goes through; one signed by a key not
    pinned is still refused."""
    optional = f'{{ signed_by = ["{parties.bank.fingerprint}"], signature = "optional" }}'
    config = exchange(tmp_path, parties, optional)
    data = SAMPLE.read_bytes()
    (tmp_path / "inbox" / "statement_20261205.csv.gpg").write_bytes(
        parties.bank.encrypt(data, [parties.us], sign=False)
    )
    (tmp_path / "inbox" / "statement_other.csv.gpg").write_bytes(
        parties.other.encrypt(data, [parties.us])
    )
    run_once(config)
    found = records(config)
    assert found["statement_20261205.csv.gpg"].state == State.ARCHIVED
    assert found["statement_other.csv.gpg"].state == State.QUARANTINED
    assert (tmp_path / "outbox" / "ERP_BANK_statement_20261205.csv").read_bytes() == (
        EXPECTED / "ERP_BANK_statement_20261205.csv"
    ).read_bytes()


def test_a_wrong_passphrase_keeps_the_file_waiting_with_a_reason_and_no_passphrase(
    tmp_path: Path, parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Our key's passphrase refused: not the file's fault. It waits (retrying), the
    reason says whose passphrase and where it comes from, and shows no passphrase."""
    wrong = "not-the-passphrase-Zq81"
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", wrong)
    config = exchange(tmp_path, parties)
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    result = run_once(config)
    (record,) = records(config).values()
    assert (record.state, record.error_kind) == (State.RETRYING, "pgp-unavailable"), record
    assert f"the passphrase of our key {parties.us.fingerprint} was refused" in (
        record.error_message or ""
    )
    assert wrong not in result.output + result.stderr + (record.error_message or "")
    assert (tmp_path / "inbox" / "statement_20261205.csv.pgp").exists()
    assert not list((tmp_path / "outbox").iterdir())


def test_a_keyring_folder_others_may_read_is_refused_and_the_file_waits(
    tmp_path: Path, parties: Parties
) -> None:
    """A keyring folder (or a key file in it) others may read: nothing is decrypted,
    the file waits with the reason, and `xchange check` refuses the configuration."""
    config = exchange(tmp_path, parties)
    (tmp_path / "keys").chmod(0o755)
    (tmp_path / "keys" / "us.secret.asc").chmod(0o644)
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    run_once(config)
    (record,) = records(config).values()
    assert record.state == State.RETRYING
    assert "others may enter it (mode 0755): chmod 700 it" in (record.error_message or "")
    checked = CliRunner().invoke(main, ["check", "--config", str(config)])
    assert checked.exit_code != 0
    assert "others may enter it (mode 0755)" in checked.output
    assert "us.secret.asc: others may read it (mode 0644): chmod 600 it" in checked.output


def test_a_gpg_that_does_not_finish_is_stopped_and_the_file_waits(
    tmp_path: Path, parties: Parties
) -> None:
    """pgp.timeout: a gpg run that hangs (a stand-in that sleeps on --decrypt) is killed
    after it; the file waits with the reason, nothing is delivered, nothing decrypted
    stays behind."""
    stand_in = tmp_path / "gpg"
    stand_in.write_text(
        f"#!{sys.executable}\n"
        "import os, sys, time\n"
        "if '--decrypt' in sys.argv:\n"
        "    time.sleep(60)\n"
        "os.execv('/usr/bin/gpg', ['/usr/bin/gpg', *sys.argv[1:]])\n",
        encoding="utf-8",
    )
    stand_in.chmod(0o700)
    config = bank_config(
        tmp_path,
        parties.keyring(tmp_path / "keys"),
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.bank.fingerprint}"] }}',
        pgp_extra=f'gpg = "{stand_in}"\ntimeout = 2',
    )
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    started = time.monotonic()
    run_once(config)
    assert time.monotonic() - started < 30
    (record,) = records(config).values()
    assert (record.state, record.error_kind) == (State.RETRYING, "pgp-unavailable")
    assert "gpg did not finish within 2 s (pgp.timeout): stopped" in (record.error_message or "")
    assert not list((tmp_path / "outbox").iterdir())
    assert not list((tmp_path / "var" / "scratch").rglob("*.plain"))


def test_plaintext_a_killed_run_left_behind_is_removed_by_the_next(
    tmp_path: Path, parties: Parties
) -> None:
    """A run killed while it converted a decrypted file leaves its plaintext in the
    private scratch folder (named after its pid); the next run removes it, and keeps
    what a live process has there."""
    config = exchange(tmp_path, parties)
    dead = subprocess.Popen(["true"])
    dead.wait()
    plain = tmp_path / "var" / "scratch" / "plain"
    plain.mkdir(parents=True)
    left = plain / f"{dead.pid}-7.plain"
    left.write_text("账号,...", encoding="utf-8")
    alive = plain / f"{os.getpid()}-8.plain"
    alive.write_text("in hand", encoding="utf-8")
    run_once(config)
    assert not left.exists()
    assert alive.exists()


def two_plaintexts(parties: Parties, *, signed: bool) -> bytes:
    """A message encrypted to us whose content is two literal data packets (the first
    signed by the bank, where ``signed``): which one would be the file?"""
    bank = parties.bank
    first = (
        bank.gpg("--sign", "-z", "0", "--output", "-", data=SAMPLE.read_bytes())
        if signed
        else bank.gpg("--store", "-z", "0", "--set-filename", "a.csv", data=SAMPLE.read_bytes())
    )
    second = bank.gpg("--store", "-z", "0", "--set-filename", "b.csv", data=b"forged,line\n")
    return bank.gpg(
        "--encrypt", "--no-literal", "-z", "0", "--recipient", parties.us.fingerprint,
        "--output", "-", data=first + second,
    )  # fmt: skip


def test_a_compression_bomb_and_two_plaintexts_are_refused_with_their_reason(
    tmp_path: Path, parties: Parties
) -> None:
    """PGP compresses: 64 MB of zeros encrypt to some 80 KB. gpg runs with
    --max-output (pgp.max_output, here 1 MiB): the file is refused as a bomb, its
    partial plaintext removed. A message holding two literal data packets (signed or
    not), or two messages run together, is refused as not one plaintext. Each is
    quarantined with the bytes received."""
    keyring = parties.keyring(tmp_path / "keys")
    config = bank_config(
        tmp_path,
        keyring,
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.bank.fingerprint}"], signature = "optional" }}',
        pgp_extra='max_output = "1MiB"',
    )
    bomb = parties.bank.encrypt(b"\0" * (64 << 20), [parties.us], extra=("-z", "9"))
    assert len(bomb) < 1 << 20
    cases = {
        "statement_bomb.csv.pgp": (bomb, "decrypts to more than 1048576 bytes (pgp.max_output)"),
        "statement_two.csv.pgp": (two_plaintexts(parties, signed=False), "not one plaintext"),
        "statement_two_messages.csv.pgp": (
            # two messages run together, the first good, the second unsigned
            parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
            + parties.bank.encrypt(b"forged,line\n", [parties.us], sign=False),
            "not one plaintext",
        ),
        "statement_two_signed.csv.pgp": (
            two_plaintexts(parties, signed=True),
            "not one plaintext",
        ),
    }
    for name, (data, _) in cases.items():
        (tmp_path / "inbox" / name).write_bytes(data)
    good = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(good)
    result = run_once(config)
    found = records(config)
    assert found["statement_20261205.csv.pgp"].state == State.ARCHIVED, result.output
    for name, (data, reason) in cases.items():
        record = found[name]
        assert record.state == State.QUARANTINED, (name, record.error_message)
        assert reason in (record.error_message or ""), (name, record.error_message)
        assert Path(record.quarantine_path or "").read_bytes() == data, name
    assert [p.name for p in (tmp_path / "outbox").iterdir()] == ["ERP_BANK_statement_20261205.csv"]
    assert not list((tmp_path / "var" / "scratch").rglob("*.plain"))


def test_a_dry_run_of_sending_again_reads_the_file_decrypted_as_a_run_does(
    tmp_path: Path, parties: Parties
) -> None:
    """``reprocess --dry-run`` converts the kept copy the way the route takes it: the
    bytes received are decrypted and checked first, so a statement delivered before
    shows the same outputs, not a decoding error on the ciphertext."""
    config = exchange(tmp_path, parties)
    sealed = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    (tmp_path / "inbox" / "statement_20261205.csv.pgp").write_bytes(sealed)
    assert run_once(config).exit_code == 0
    (record,) = records(config).values()
    dry = CliRunner().invoke(
        main,
        ["reprocess", str(record.id), "--force", "--dry-run", "--config", str(config)],
    )
    assert dry.exit_code == 0, dry.output
    (name,) = [p.name for p in EXPECTED.iterdir()]
    assert f"  {name}: the same bytes as delivered before" in dry.output, dry.output
