"""Plain copies (mapping = "copy") and several files at once (transfers), over real SFTP."""

from __future__ import annotations

import os

import pytest
from click.testing import CliRunner

from tests.conftest import Exchange
from tests.sftp_routes import sftp_target_toml
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import ConfigError

COPY_ROUTE = """
[[routes]]
name = "copy"
source = {{ endpoint = "shop-drop", pattern = "*.dat" }}
mapping = "copy"
target = {{ endpoint = "wms-outbox", name = "{{source_stem}}.out" }}
after = {{ action = "delete" }}
ready = {{ settle = 0 }}
transfers = {transfers}
"""


def copy_exchange(exchange: Exchange, target: str | None = None, transfers: int = 1) -> None:
    exchange.write_config(target=target)
    text = exchange.config.read_text()
    exchange.config.write_text(text + COPY_ROUTE.format(transfers=transfers))


def test_copy_route_delivers_bytes_unchanged_under_the_template_name(exchange: Exchange) -> None:
    """Any bytes, even undecodable ones, arrive as they were, and once."""
    copy_exchange(exchange)
    payload = bytes(range(256)) * 10
    (exchange.inbox / "a.dat").write_bytes(payload)
    result = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    assert (exchange.outbox / "a.out").read_bytes() == payload
    assert not (exchange.inbox / "a.dat").exists()


def test_a_copy_route_with_layouts_or_a_mapping_route_without_them_is_refused(
    exchange: Exchange,
) -> None:
    """Configuration says which keys go with mapping = "copy" and which are missing."""
    copy_exchange(exchange)
    exchange.config.write_text(
        exchange.config.read_text().replace(
            'mapping = "copy"', 'mapping = "copy"\nsource_layout = "shop-order-lines"'
        )
    )
    with pytest.raises(ConfigError) as info:
        load_config(exchange.config, env={})
    assert any(
        'routes[1].source_layout: a mapping = "copy" route has no layouts' in p
        for p in info.value.problems
    )


@pytest.mark.sftp
def test_many_files_several_at_a_time_each_delivered_once(
    exchange: Exchange, sshd: SshServer
) -> None:
    """With transfers = 6, 120 files go out over several SFTP connections, each once."""
    folder = sshd.folder("parallel")
    copy_exchange(exchange, target=sftp_target_toml(sshd, folder), transfers=6)
    for i in range(120):
        (exchange.inbox / f"f{i:03d}.dat").write_bytes(os.urandom(2048))
    expected = {
        f"f{i:03d}.out": (exchange.inbox / f"f{i:03d}.dat").read_bytes() for i in range(120)
    }
    result = CliRunner().invoke(
        main, ["run", "--once", "--route", "copy", "--config", str(exchange.config)]
    )
    assert result.exit_code == 0, result.output
    assert "copy: 120 delivered (120 documents)" in result.stdout
    assert {n: (folder / n).read_bytes() for n in os.listdir(folder)} == expected
