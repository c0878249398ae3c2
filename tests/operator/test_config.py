"""Configuration: typed, validated once, every error naming the file and the key path."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import REPO, Exchange
from xchange.cli import main
from xchange.config import LocalEndpoint, SFTPEndpoint, load_config
from xchange.errors import ConfigError


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {})
    return info.value.problems


def test_demo_and_sftp_example_configurations_load() -> None:
    """The shipped example configurations are valid (so they cannot rot)."""
    demo = load_config(REPO / "config" / "demo.toml")
    assert [r.name for r in demo.routes] == [
        "shop-orders",
        "oms-kingdee-orders",
        "wms-stock-count",
        "sales-returns",
        "purchase-inbound",
        "purchase-inbound-lots",
        "shop-kingdee-orders",
        "shop-discount-orders",
        "order-line-shares",
        "delivery-confirm",
        "stock-count-gain",
        "stock-count-loss",
        "shop-orders-3pl",
        "bank-statements",
        "excel-kingdee-orders",
        "kingdee-excel-import",
        "shop-orders-zip",
    ]
    assert isinstance(demo.endpoints["shop-drop"], LocalEndpoint)
    # Relative paths are relative to the configuration file, not the working directory.
    assert demo.journal.path == REPO / "var" / "demo" / "journal.sqlite"


def test_sftp_example_checks_key_file_and_secret_variables(tmp_path: Path) -> None:
    """The SFTP example names its problems on a machine without its key file."""
    problems = problems_of(REPO / "config" / "sftp-example.toml")
    assert any("endpoints.wms-sftp.key_file: no such file" in p for p in problems)


def test_wrong_type_names_file_and_key_path(exchange: Exchange) -> None:
    """A port that is not a number is reported as file: key.path: expected..., got "abc"."""
    text = exchange.config.read_text().replace(
        '[endpoints.wms-outbox]\ntype = "local"',
        '[endpoints.wms-outbox]\ntype = "sftp"\nhost = "h"\nport = "abc"\nuser = "u"\n'
        'known_hosts = "kh"\npassword_env = "PW"\n#',
    )
    exchange.config.write_text(text)
    problems = problems_of(exchange.config, env={"PW": "x"})
    assert (
        f'{exchange.config}: endpoints.wms-outbox.port: expected an integer, got "abc"' in problems
    )


def test_route_errors_carry_the_list_index(exchange: Exchange) -> None:
    """Problems inside the second route are reported as routes[1]...."""
    text = exchange.config.read_text()
    second = text[text.index("[[routes]]") :].replace('name = "shop-orders"', 'name = "two"')
    second = second.replace('endpoint = "wms-outbox"', 'endpoint = "wms"')
    exchange.config.write_text(text + second.replace("attempts = 2", "attempts = 0", 1))
    problems = problems_of(exchange.config)
    assert any(
        p.startswith(f'{exchange.config}: routes[1].target.endpoint: no endpoint named "wms"')
        for p in problems
    ), problems
    assert any("routes[1].retry.attempts" in p for p in problems), problems


def test_unknown_key_is_reported_without_its_value(exchange: Exchange) -> None:
    """A misplaced secret is named as an unknown key, but its value is never echoed."""
    text = exchange.config.read_text().replace(
        '[endpoints.shop-drop]\ntype = "local"',
        '[endpoints.shop-drop]\ntype = "local"\npassword = "hunter2-secret"',
    )
    exchange.config.write_text(text)
    problems = problems_of(exchange.config)
    assert any("endpoints.shop-drop.password: unknown key" in p for p in problems)
    assert not any("hunter2-secret" in p for p in problems)


def test_missing_file_and_bad_toml_are_config_errors(tmp_path: Path) -> None:
    """A missing file or broken TOML gives one clear line naming the file."""
    assert problems_of(tmp_path / "nope.toml") == [f"{tmp_path / 'nope.toml'}: file not found"]
    bad = tmp_path / "bad.toml"
    bad.write_text("[journal\npath = 1\n")
    (line,) = problems_of(bad)
    assert line.startswith(f"{bad}: not valid TOML:") and "line 1" in line


def test_password_comes_from_the_named_environment_variable(exchange: Exchange) -> None:
    """password_env is read once at load; a missing variable is an error naming the key."""
    text = exchange.config.read_text().replace(
        '[endpoints.wms-outbox]\ntype = "local"',
        '[endpoints.wms-outbox]\ntype = "sftp"\nhost = "h"\nuser = "u"\n'
        'known_hosts = "kh"\npassword_env = "WMS_PW"\n#',
    )
    exchange.config.write_text(text)
    problems = problems_of(exchange.config)
    assert any(
        "endpoints.wms-outbox.password_env: environment variable WMS_PW is not set" in p
        for p in problems
    )
    config = load_config(exchange.config, env={"WMS_PW": "s3cret-value"})
    endpoint = config.endpoints["wms-outbox"]
    assert isinstance(endpoint, SFTPEndpoint)
    assert endpoint.password is not None
    assert endpoint.password.get_secret_value() == "s3cret-value"
    assert "s3cret-value" not in repr(config)


def test_check_command_exits_nonzero_with_key_paths(exchange: Exchange) -> None:
    """`xchange check` prints file and key path for a broken configuration and exits 2."""
    exchange.config.write_text(
        exchange.config.read_text().replace("retry = { attempts = 2", 'retry = { attempts = "many"')
    )
    result = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert result.exit_code == 2
    assert f'{exchange.config}: routes[0].retry.attempts: expected an integer, got "many"' in (
        result.stderr
    )


def test_check_reads_the_config_from_the_environment(exchange: Exchange) -> None:
    """XCHANGE_CONFIG stands in for --config."""
    result = CliRunner().invoke(main, ["check"], env={"XCHANGE_CONFIG": str(exchange.config)})
    assert result.exit_code == 0, result.output
    assert "OK: 1 route(s) (shop-orders)" in result.stdout


def test_check_names_mapping_fields_missing_from_the_layout(
    exchange: Exchange, tmp_path: Path
) -> None:
    """A mapping reading a field the source layout lacks fails check, naming both files."""
    formats = tmp_path / "formats"
    formats.mkdir()
    for f in (REPO / "formats").glob("*.toml"):
        (formats / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    mapping = formats / "shop-to-wms-outbound.toml"
    mapping.write_text(
        mapping.read_text(encoding="utf-8").replace(
            'SkuName = "goods_name"', 'SkuName = "goods_title"'
        ),
        encoding="utf-8",
    )
    exchange.config.write_text(
        exchange.config.read_text().replace(str(REPO / "formats"), str(formats))
    )
    result = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert result.exit_code == 2
    assert (
        f"{mapping}: lines.SkuName: source layout {formats / 'shop-order-lines.toml'} "
        "has no field 'goods_title'"
    ) in result.stderr


def test_host_and_user_can_never_be_read_as_ssh_options(exchange: Exchange) -> None:
    """A host or user starting with "-" is refused (they reach OpenSSH's command line)."""
    text = exchange.config.read_text().replace(
        '[endpoints.wms-outbox]\ntype = "local"',
        '[endpoints.wms-outbox]\ntype = "sftp"\nhost = "-oProxyCommand=evil"\nuser = "-oX"\n'
        'known_hosts = "kh"\npassword_env = "PW"\n#',
    )
    exchange.config.write_text(text)
    problems = problems_of(exchange.config, env={"PW": "x"})
    assert any("endpoints.wms-outbox.host: string should match pattern" in p for p in problems)
    assert any("endpoints.wms-outbox.user: string should match pattern" in p for p in problems)


def test_target_verify_keys_default_to_size_and_are_checked(exchange: Exchange) -> None:
    """verify (size by default: existing configurations are unchanged), readback_max in
    bytes or units, sidecar; readback with readback_max = 0 would refuse every file."""
    (route,) = load_config(exchange.config).routes
    assert (route.target.verify, route.target.readback_max, route.target.sidecar) == (
        "size",
        16 << 20,
        None,
    )
    text = exchange.config.read_text()
    line = 'name = "WMS_OUT_{OrderDate}_{OrderNo}.xml" }'
    keys = 'verify = "hash", readback_max = "64MiB", sidecar = "sha256" }'
    exchange.config.write_text(text.replace(line, line[:-1] + ", " + keys))
    (route,) = load_config(exchange.config).routes
    assert (route.target.verify, route.target.readback_max, route.target.sidecar) == (
        "hash",
        64 << 20,
        "sha256",
    )
    keys = 'verify = "readback", readback_max = 0, sidecar = "md5" }'
    exchange.config.write_text(text.replace(line, line[:-1] + ", " + keys))
    problems = problems_of(exchange.config)
    assert any("routes[0].target.sidecar" in p for p in problems), problems
    exchange.config.write_text(
        text.replace(line, line[:-1] + ', verify = "readback", readback_max = 0 }')
    )
    (problem,) = problems_of(exchange.config)
    assert "routes[0].target" in problem and "would refuse every file" in problem
