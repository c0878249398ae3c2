"""The layers stacked: transport -> PGP decrypt -> archive unpack -> codec on the way in,
codec -> zip -> PGP encrypt -> transport on the way out. An encrypted, signed zip of GBK
CSVs is decrypted, unpacked and each entry delivered, the journal and the quarantine
keeping the bytes received; a zip of workbooks is unpacked once (a workbook is a zip
itself, read by the xlsx codec, never unpacked again)."""

from __future__ import annotations

import hashlib
import io
import shutil
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.archive_files import archive_route, zip_bytes
from tests.conftest import REPO, SAMPLES, Exchange
from tests.pgpkeys import PASSPHRASE, Parties
from tests.procs import run_once
from tests.sftp_routes import sftp_source, sftp_target
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.journal import FileRecord, State, open_journal

SAMPLE = SAMPLES / "shop-orders-zip" / "in" / "shop_export_20261207.zip"
EXPECTED = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders-zip" / "expected").iterdir()}
ORDERS = (SAMPLES / "shop-orders" / "in" / "orders_20261121.csv").read_bytes()
ORDERS_OUT = {p.name: p.read_bytes() for p in (SAMPLES / "shop-orders" / "expected").iterdir()}
SHEET = SAMPLES / "excel-kingdee-orders" / "in" / "sales_20261121.xlsx"
SHEET_OUT = {
    p.name: p.read_bytes() for p in (SAMPLES / "excel-kingdee-orders" / "expected").iterdir()
}


@pytest.fixture
def parties(pgp_parties: Parties, monkeypatch: pytest.MonkeyPatch) -> Parties:
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", PASSPHRASE)
    return pgp_parties


def with_pgp(exchange: Exchange, parties: Parties, *, source: bool, target: bool) -> None:
    """The shop's zip route with PGP: its files come encrypted to us and signed by the
    "bank" party (``source``), and/or its outputs go zipped, encrypted to that party and
    signed by us (``target``)."""
    archive_route(
        exchange.config,
        archive='{ name = "WMS_{source_stem}.zip", names = "gbk" }' if target else None,
    )
    keyring = parties.keyring(exchange.root / "keys")
    text = exchange.config.read_text(encoding="utf-8")
    partner = parties.bank.fingerprint
    if source:
        text = text.replace(
            'pattern = ["*.zip", "*.gz", "*.tgz"], ',
            f'pattern = "*.zip.pgp", pgp = {{ signed_by = ["{partner}"] }}, ',
        )
    if target:
        zipped = 'archive = { name = "WMS_{source_stem}.zip", names = "gbk" }'
        assert zipped in text
        text = text.replace(zipped, f'{zipped}, pgp = {{ encrypt_to = ["{partner}"] }}')
    text = text.replace(
        "[journal]",
        f'[pgp]\nkeyring = "{keyring}"\nkey = "{parties.us.fingerprint}"\n'
        'passphrase_env = "PGP_TEST_PASSPHRASE"\n\n[journal]',
    )
    exchange.config.write_text(text, encoding="utf-8")


def records(exchange: Exchange) -> dict[str, FileRecord]:
    journal = open_journal(load_config(exchange.config).journal)
    try:
        return {r.path: r for r in journal.query()}
    finally:
        journal.close()


def delivered(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_an_encrypted_signed_zip_of_gbk_csvs_is_decrypted_unpacked_and_each_entry_delivered(
    exchange: Exchange, parties: Parties
) -> None:
    """The shipped GBK zip, encrypted to us and signed by the partner: each entry is
    delivered as from the bare zip; the archive's record has the size and sha256 of the
    bytes received, and its archived copy is those bytes."""
    with_pgp(exchange, parties, source=True, target=False)
    sealed = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    name = "shop_export_20261207.zip.pgp"
    (exchange.inbox / name).write_bytes(sealed)
    done = run_once(exchange.config)
    assert done.returncode == 0, done.stdout + done.stderr
    assert delivered(exchange.outbox) == EXPECTED
    found = records(exchange)
    archive = found[name]
    assert archive.state == State.ARCHIVED
    assert (archive.size, archive.sha256) == (len(sealed), hashlib.sha256(sealed).hexdigest())
    assert (exchange.inbox / "archive" / name).read_bytes() == sealed
    entries = {p: r.state for p, r in found.items() if p != name}
    assert entries == {
        f"{name}!/门店订单_20261207.csv": State.DELIVERED,
        f"{name}!/门店订单_誠品店_20261207.csv": State.DELIVERED,
    }
    assert not list((exchange.root / "var").rglob("*.plain"))


def test_a_hostile_encrypted_zip_is_quarantined_whole_with_the_bytes_received(
    exchange: Exchange, parties: Parties
) -> None:
    """An encrypted zip whose entry would leave its folder: refused whole after it is
    decrypted; the quarantine keeps the encrypted bytes, no entry is claimed, and the
    good encrypted zip beside it is delivered."""
    with_pgp(exchange, parties, source=True, target=False)
    slip = parties.bank.encrypt(zip_bytes([(b"../evil.csv", ORDERS)]), [parties.us])
    (exchange.inbox / "shop_export_slip.zip.pgp").write_bytes(slip)
    (exchange.inbox / "shop_export_20261207.zip.pgp").write_bytes(
        parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    )
    done = run_once(exchange.config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "would leave its folder" in done.stdout + done.stderr
    assert delivered(exchange.outbox) == EXPECTED
    found = records(exchange)
    record = found["shop_export_slip.zip.pgp"]
    assert record.state == State.QUARANTINED
    assert Path(record.quarantine_path or "").read_bytes() == slip
    assert [p for p in found if p.startswith("shop_export_slip")] == ["shop_export_slip.zip.pgp"]


def test_a_wrong_signature_on_an_encrypted_zip_quarantines_it_whole(
    exchange: Exchange, parties: Parties
) -> None:
    """Signed by a key in the keyring but not pinned: the zip is not unpacked, nothing of
    it delivered, its encrypted bytes kept with a reason naming the key."""
    with_pgp(exchange, parties, source=True, target=False)
    wrong = parties.other.encrypt(SAMPLE.read_bytes(), [parties.us])
    (exchange.inbox / "shop_export_20261207.zip.pgp").write_bytes(wrong)
    done = run_once(exchange.config)
    assert done.returncode == 1, done.stdout + done.stderr
    assert delivered(exchange.outbox) == {}
    (record,) = records(exchange).values()  # no entry claimed
    assert record.state == State.QUARANTINED
    assert record.error_kind == "pgp"
    assert f"signed by {parties.other.fingerprint}, which is not pinned" in (
        record.error_message or ""
    )
    assert Path(record.quarantine_path or "").read_bytes() == wrong
    assert not (exchange.inbox / "shop_export_20261207.zip.pgp").exists()


def test_outputs_zipped_then_encrypted_arrive_as_one_file_the_partner_decrypts_and_verifies(
    exchange: Exchange, parties: Parties
) -> None:
    """target.archive and target.pgp: one ``.zip.pgp`` per source; the partner's gpg
    decrypts it and verifies our signature, and the zip inside holds the outputs (names
    in GBK), byte for byte."""
    with_pgp(exchange, parties, source=False, target=True)
    shutil.copy(SAMPLE, exchange.inbox)
    done = run_once(exchange.config)
    assert done.returncode == 0, done.stdout + done.stderr
    out = delivered(exchange.outbox)
    assert sorted(out) == [
        "WMS_门店订单_20261207.zip.pgp",
        "WMS_门店订单_誠品店_20261207.zip.pgp",
    ]
    assert opened_by_the_partner(parties, out, exchange.root) == EXPECTED


def opened_by_the_partner(
    parties: Parties, sealed: dict[str, bytes], scratch: Path
) -> dict[str, bytes]:
    """What the partner reads of the zips we sent: each decrypted by its own gpg, our
    signature verified (VALIDSIG with our primary key), then unzipped (GBK names)."""
    inside: dict[str, bytes] = {}
    for i, data in enumerate(sealed.values()):
        opened = scratch / f"opened-{i}"
        status = parties.bank.gpg(
            "--status-fd", "1", "--decrypt", "--output", str(opened), data=data
        ).decode()
        valid = [line.split() for line in status.splitlines() if " VALIDSIG " in line]
        assert valid and valid[0][-1] == parties.us.fingerprint, status
        assert "GOODMDC" in status and "DECRYPTION_OKAY" in status
        with zipfile.ZipFile(io.BytesIO(opened.read_bytes()), metadata_encoding="gbk") as z:
            assert z.testzip() is None
            inside.update({n: z.read(n) for n in z.namelist()})
    return inside


@pytest.mark.sftp
def test_every_layer_both_ways_over_openssh(
    exchange: Exchange, parties: Parties, sshd: SshServer
) -> None:
    """Over a real OpenSSH server both ways: an encrypted, signed GBK zip taken from the
    drop folder is decrypted, unpacked and converted; each source's outputs go zipped and
    encrypted to the partner, who opens them to the expected files."""
    drop, out = sshd.folder("stack-drop"), sshd.folder("stack-out")
    with_pgp(exchange, parties, source=True, target=True)
    sftp_source(exchange, sshd, drop)
    sftp_target(exchange, sshd, out)
    sealed = parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us])
    (drop / "shop_export_20261207.zip.pgp").write_bytes(sealed)
    done = run_once(exchange.config)
    assert done.returncode == 0, done.stdout + done.stderr
    made = delivered(out)
    assert sorted(made) == [
        "WMS_门店订单_20261207.zip.pgp",
        "WMS_门店订单_誠品店_20261207.zip.pgp",
    ]
    assert opened_by_the_partner(parties, made, exchange.root) == EXPECTED
    assert (drop / "archive" / "shop_export_20261207.zip.pgp").read_bytes() == sealed


def test_a_zip_of_workbooks_is_unpacked_once_and_each_workbook_read_by_the_xlsx_codec(
    tmp_path: Path,
) -> None:
    """A zip whose entries are .xlsx workbooks (zips themselves): each entry goes to the
    xlsx codec as it is, not refused as a nested archive nor unpacked again."""
    (tmp_path / "config").mkdir()
    text = (REPO / "config" / "demo.toml").read_text(encoding="utf-8")
    old = 'source = { endpoint = "shop-drop", pattern = "sales_*.xlsx" }'
    assert old in text
    text = text.replace(
        old,
        'source = { endpoint = "shop-drop", pattern = "sales_*.zip", '
        'unpack = { kind = "zip", entries = "*.xlsx", names = "gbk" } }',
    )
    (tmp_path / "config" / "demo.toml").write_text(text, encoding="utf-8")
    (tmp_path / "formats").symlink_to(REPO / "formats")
    inbox = tmp_path / "var" / "demo" / "inbox"
    inbox.mkdir(parents=True)
    (inbox / "sales_week.zip").write_bytes(zip_bytes([("销售_20261121.xlsx", SHEET.read_bytes())]))
    done = run_once(tmp_path / "config" / "demo.toml")
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("excel-kingdee-orders"))
    assert "1 delivered" in line and "quarantined" not in line, done.stdout + done.stderr
    assert delivered(tmp_path / "var" / "demo" / "outbox" / "kingdee") == SHEET_OUT


def test_convert_and_the_dry_run_decrypt_and_unpack_as_the_run_does(
    exchange: Exchange, parties: Parties
) -> None:
    """``xchange convert`` and ``run --once --dry-run`` on a route whose zips come
    encrypted: decrypted (signature checked) and unpacked first, as a run takes them;
    one signed by an unpinned key would be quarantined, and says why."""
    with_pgp(exchange, parties, source=True, target=False)
    good = exchange.inbox / "shop_export_20261207.zip.pgp"
    good.write_bytes(parties.bank.encrypt(SAMPLE.read_bytes(), [parties.us]))
    wrong = exchange.inbox / "shop_export_wrong.zip.pgp"
    wrong.write_bytes(parties.other.encrypt(SAMPLE.read_bytes(), [parties.us]))
    out = exchange.root / "converted"
    argv = ["convert", "--config", str(exchange.config), "--route", "shop-orders"]
    converted = CliRunner().invoke(main, [*argv, "-o", str(out), str(good)])
    assert converted.exit_code == 0, converted.output
    assert delivered(out) == EXPECTED
    refused = CliRunner().invoke(main, [*argv, "-o", str(out / "no"), str(wrong)])
    assert refused.exit_code == 1
    assert f"signed by {parties.other.fingerprint}, which is not pinned" in refused.output
    planned = CliRunner().invoke(
        main, ["run", "--once", "--dry-run", "--config", str(exchange.config)]
    )
    lines = [ln for ln in planned.output.splitlines() if ln.startswith("shop-orders:")]
    (would,) = [ln for ln in lines if "shop_export_20261207" in ln]
    assert "would deliver as" in would and "WMS_OUT_20261207_EC20261207004.xml" in would
    (bad,) = [ln for ln in lines if "shop_export_wrong" in ln]
    assert "quarantine" in bad and "which is not pinned" in bad, planned.output
    assert delivered(exchange.outbox) == {}


def test_a_bad_entry_of_an_encrypted_zip_is_quarantined_alone_with_its_own_bytes(
    exchange: Exchange, parties: Parties
) -> None:
    """One entry breaks a rule: it alone is quarantined (its kept copy is the entry, as
    unpacked from the decrypted zip), the other is delivered, and the archive, every entry
    done, is archived as the encrypted bytes received."""
    with_pgp(exchange, parties, source=True, target=False)
    bad = ORDERS.replace(b"13800138000", b"1380")
    sealed = parties.bank.encrypt(
        zip_bytes([("门店订单_好.csv", ORDERS), ("门店订单_坏.csv", bad)]), [parties.us]
    )
    name = "shop_export_1.zip.pgp"
    (exchange.inbox / name).write_bytes(sealed)
    done = run_once(exchange.config)
    assert done.returncode == 1, done.stdout + done.stderr
    found = records(exchange)
    assert found[f"{name}!/门店订单_好.csv"].state == State.DELIVERED
    kept = found[f"{name}!/门店订单_坏.csv"]
    assert kept.state == State.QUARANTINED
    assert Path(kept.quarantine_path or "").read_bytes() == bad
    assert found[name].state == State.ARCHIVED
    assert (exchange.inbox / "archive" / name).read_bytes() == sealed
    assert delivered(exchange.outbox) == ORDERS_OUT  # the good entry's orders
