"""The operator's day: commands that only read work without secrets, exit codes and
messages say what happened, nothing in a drop folder is ignored without a word."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner, Result

from tests.conftest import SAMPLES, Exchange
from xchange.cli import main

SAMPLE = SAMPLES / "shop-orders" / "in" / "orders_20261121.csv"


def cli(exchange: Exchange, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, [*args, "--config", str(exchange.config)], env=env)


def sftp_target_needing_a_password(exchange: Exchange) -> None:
    """The route's target on an SFTP server whose password is in XCHANGE_WMS_PASSWORD."""
    exchange.write_config(
        target='[endpoints.wms-outbox]\ntype = "sftp"\nhost = "127.0.0.1"\nport = 1\n'
        f'user = "wms"\npath = "/in"\npassword_env = "XCHANGE_WMS_PASSWORD"\n'
        f'known_hosts = "{exchange.root / "known_hosts"}"\n'
    )


def test_commands_that_only_read_work_without_the_secrets(exchange: Exchange) -> None:
    """status, journal list, quarantine list and check need no password: they work in a
    shell where XCHANGE_WMS_PASSWORD is not set (check notes it)."""
    sftp_target_needing_a_password(exchange)
    for args in (("status",), ("journal", "list"), ("quarantine", "list")):
        result = cli(exchange, *args)
        assert result.exit_code == 0, (args, result.output)
    checked = cli(exchange, "check")
    assert checked.exit_code == 0, checked.output
    assert "note: " in checked.stdout and "XCHANGE_WMS_PASSWORD is not set" in checked.stdout


def test_commands_that_connect_name_the_missing_variable(exchange: Exchange) -> None:
    """run --once and check --remote need the password: exit 2 naming file, key and
    variable."""
    sftp_target_needing_a_password(exchange)
    exchange.drop_sample()
    for args in (("run", "--once"), ("check", "--remote")):
        result = cli(exchange, *args)
        assert result.exit_code == 2, (args, result.output)
        assert (
            f"{exchange.config}: endpoints.wms-outbox.password_env: environment variable "
            "XCHANGE_WMS_PASSWORD is not set"
        ) in result.stderr
    assert (exchange.inbox / SAMPLE.name).exists()


def test_a_configuration_of_copy_routes_needs_no_formats_folder(
    exchange: Exchange, tmp_path: Path
) -> None:
    """Only routes with layouts or a mapping need `formats`: copy routes run without it."""
    exchange.config.write_text(
        f"""
[journal]
path = "{exchange.journal}"

[quarantine]
path = "{exchange.quarantine}"

[endpoints.drop]
type = "local"
path = "{exchange.inbox}"

[endpoints.out]
type = "local"
path = "{exchange.outbox}"

[[routes]]
name = "copy-all"
source = {{ endpoint = "drop", pattern = "*.csv" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
ready = {{ settle = 0 }}
""",
        encoding="utf-8",
    )
    shutil.copy(SAMPLE, exchange.inbox / SAMPLE.name)
    assert cli(exchange, "check").exit_code == 0
    ran = cli(exchange, "run", "--once")
    assert ran.exit_code == 0, ran.output
    assert (exchange.outbox / SAMPLE.name).read_bytes() == SAMPLE.read_bytes()
    listed = json.loads(cli(exchange, "journal", "list", "--json").stdout)
    assert listed["state"] == "archived"
