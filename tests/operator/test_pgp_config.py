"""PGP in the configuration: keys pinned by full fingerprint, the [pgp] table a route
needs, and `xchange check` saying in words what would stop PGP (gpg missing, a pinned
key not in the keyring, a keyring others may read, our passphrase refused)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.pgpkeys import PASSPHRASE, Parties, bank_config
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import ConfigError


def problems_of(path: Path, env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env)
    return info.value.problems


def check(config: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["check", "--config", str(config)])
    return result.exit_code, result.output


@pytest.fixture
def parties(pgp_parties: Parties, monkeypatch: pytest.MonkeyPatch) -> Parties:
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", PASSPHRASE)
    return pgp_parties


def test_a_key_id_or_a_short_value_is_not_a_pin(tmp_path: Path) -> None:
    """signed_by takes full fingerprints (spaces and case as gpg prints them are fine);
    a 16-digit key id is refused, saying why."""
    fpr = "AA72 1DAD 3CBE 2CC0 41E8  0FF8 C504 CF83 537D D1A0".lower()
    config = bank_config(
        tmp_path,
        tmp_path,
        us="A" * 40,
        source_pgp=f'{{ signed_by = ["{fpr}", "C504CF83537DD1A0"] }}',
    )
    (problem,) = problems_of(config, {"PGP_TEST_PASSPHRASE": "x"})
    assert "routes[0].source.pgp.signed_by[1]" in problem
    assert "is a key id, not a pin: give the key's full fingerprint" in problem
    config = bank_config(tmp_path, tmp_path, us="A" * 40, source_pgp=f'{{ signed_by = ["{fpr}"] }}')
    loaded = load_config(config, env={"PGP_TEST_PASSPHRASE": "sesame-42"})
    assert loaded.routes[0].source.pgp is not None
    assert loaded.routes[0].source.pgp.signed_by == ["AA721DAD3CBE2CC041E80FF8C504CF83537DD1A0"]
    assert loaded.pgp is not None and loaded.pgp.passphrase is not None
    assert "sesame-42" not in repr(loaded.pgp)


def test_a_required_signature_needs_pinned_keys_and_a_pgp_route_needs_the_table(
    tmp_path: Path,
) -> None:
    """signature = "required" (the default) without signed_by, and a route with PGP in
    a configuration without [pgp], are refused with what to write."""
    config = bank_config(tmp_path, tmp_path, us="A" * 40, source_pgp="{ decrypt = true }")
    (problem,) = problems_of(config, {"PGP_TEST_PASSPHRASE": "x"})
    assert 'signature = "required" needs signed_by' in problem
    text = config.read_text(encoding="utf-8")
    start = text.index("[pgp]")
    end = text.index("[endpoints.")
    config.write_text(
        text[:start]
        + text[end:].replace("{ decrypt = true }", '{ signed_by = ["' + "B" * 40 + '"] }'),
        encoding="utf-8",
    )
    (problem,) = problems_of(config, {})
    assert "routes[0]: uses PGP: add a [pgp] table naming the keyring" in problem


def test_check_passes_a_sound_setup_and_names_each_key_missing_from_the_keyring(
    tmp_path: Path, parties: Parties
) -> None:
    """`xchange check`: OK when gpg, the keyring, the pins and our passphrase are sound;
    else each fingerprint pinned but not in the keyring, named with its key path."""
    keyring = parties.keyring(tmp_path / "keys")
    config = bank_config(
        tmp_path,
        keyring,
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.bank.fingerprint}"] }}',
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
    )
    code, output = check(config)
    assert code == 0, output
    config = bank_config(
        tmp_path,
        keyring,
        us=parties.us.fingerprint,
        source_pgp=f'{{ signed_by = ["{parties.stranger.fingerprint}"] }}',
        target_pgp=f'{{ encrypt_to = ["{parties.bank.fingerprint}"] }}',
    )
    code, output = check(config)
    assert code != 0
    assert (
        f"routes[0].source.pgp.signed_by: {parties.stranger.fingerprint}: no key with this "
        "fingerprint in the keyring"
    ) in output


def test_check_refuses_a_missing_gpg_and_a_wrong_passphrase_without_showing_it(
    tmp_path: Path, parties: Parties, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A route asking for PGP where gpg is not installed, and our key's passphrase
    refused: both said in words; the passphrase is not in the output."""
    keyring = parties.keyring(tmp_path / "keys")
    pinned = f'{{ signed_by = ["{parties.bank.fingerprint}"] }}'
    config = bank_config(
        tmp_path,
        keyring,
        us=parties.us.fingerprint,
        source_pgp=pinned,
        pgp_extra='gpg = "no-such-gpg"',
    )
    code, output = check(config)
    assert code != 0
    assert "pgp.gpg: 'no-such-gpg' is not installed (apt-get install gnupg)" in output
    wrong = "a-wrong-passphrase-7Hq"
    monkeypatch.setenv("PGP_TEST_PASSPHRASE", wrong)
    config = bank_config(tmp_path, keyring, us=parties.us.fingerprint, source_pgp=pinned)
    code, output = check(config)
    assert code != 0
    assert f"the passphrase of our key {parties.us.fingerprint} was refused" in output
    assert wrong not in output


@pytest.mark.parametrize("name", ["../{name}.pgp", "out/{name}.pgp", ".{name}.pgp"])
def test_a_sealed_name_that_would_leave_its_folder_is_refused(tmp_path: Path, name: str) -> None:
    """target.pgp.name makes the delivered name from the output's: a folder or a
    leading dot in its own text is refused when the configuration is read."""
    config = bank_config(
        tmp_path,
        tmp_path,
        us="A" * 40,
        source_pgp=None,
        target_pgp=f'{{ encrypt_to = ["{"B" * 40}"], name = "{name}" }}',
    )
    (problem,) = problems_of(config, {"PGP_TEST_PASSPHRASE": "x"})
    assert "routes[0].target.pgp.name" in problem
    assert "does not make a plain file name" in problem
