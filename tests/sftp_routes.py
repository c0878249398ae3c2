"""SFTP endpoints and routes of the tests' real servers."""

from __future__ import annotations

import io
from pathlib import Path

from tests.conftest import Exchange
from tests.sftpservers import SftpServer
from tests.sshd import SshServer
from xchange.config import SFTPEndpoint, Timeouts
from xchange.remote.sftp import SFTPRemote


def endpoint(sshd: SshServer, folder: Path, **overrides: object) -> SFTPEndpoint:
    values: dict[str, object] = {
        "host": sshd.host,
        "port": sshd.port,
        "user": sshd.user,
        "path": str(folder),
        "key_file": sshd.client_key,
        "known_hosts": sshd.known_hosts,
        "timeouts": Timeouts(connect=5, banner=5, auth=5, operation=10),
    }
    values.update(overrides)
    return SFTPEndpoint.model_validate(values)


def put(remote: SFTPRemote, name: str, data: bytes, **kwargs: object) -> object:
    """Deliver bytes through the streaming put_atomic."""
    return remote.put_atomic(name, io.BytesIO(data), len(data), **kwargs)  # type: ignore[arg-type]


def server_target_toml(server: SftpServer, folder: Path) -> str:
    """The route's target endpoint on one of the other SFTP server kinds."""
    return f"""
[endpoints.wms-outbox]
type = "sftp"
host = "{server.host}"
port = {server.port}
user = "{server.user}"
path = "{server.remote_path(folder)}"
key_file = "{server.client_key}"
known_hosts = "{server.known_hosts}"
timeouts = {{ connect = 5, banner = 5, auth = 5, operation = 10 }}
"""


def sftp_target_toml(sshd: SshServer, folder: Path, known_hosts: Path | None = None) -> str:
    return f"""
[endpoints.wms-outbox]
type = "sftp"
host = "{sshd.host}"
port = {sshd.port}
user = "{sshd.user}"
path = "{folder}"
key_file = "{sshd.client_key}"
known_hosts = "{known_hosts or sshd.known_hosts}"
timeouts = {{ connect = 5, banner = 5, auth = 5, operation = 10 }}
"""


def endpoint_toml(name: str, sshd: SshServer, folder: Path) -> str:
    return f"""
[endpoints.{name}]
type = "sftp"
host = "{sshd.host}"
port = {sshd.port}
user = "{sshd.user}"
path = "{folder}"
key_file = "{sshd.client_key}"
known_hosts = "{sshd.known_hosts}"
timeouts = {{ connect = 5, banner = 5, auth = 5, operation = 10 }}
"""


def sftp_source(exchange: Exchange, sshd: SshServer, drop: Path) -> None:
    """Point the route's source at an SFTP folder of the test sshd."""
    text = exchange.config.read_text().replace(
        f'[endpoints.shop-drop]\ntype = "local"\npath = "{exchange.inbox}"',
        f'[endpoints.shop-drop]\ntype = "sftp"\nhost = "{sshd.host}"\nport = {sshd.port}\n'
        f'user = "{sshd.user}"\npath = "{drop}"\nkey_file = "{sshd.client_key}"\n'
        f'known_hosts = "{sshd.known_hosts}"',
    )
    exchange.config.write_text(text)


def sftp_target(exchange: Exchange, sshd: SshServer, folder: Path) -> None:
    """Point the route's target at an SFTP folder of the test sshd."""
    text = exchange.config.read_text().replace(
        f'[endpoints.wms-outbox]\ntype = "local"\npath = "{exchange.outbox}"\n',
        sftp_target_toml(sshd, folder),
    )
    exchange.config.write_text(text)


def sftp_endpoint(server: SftpServer, folder: Path, **overrides: object) -> SFTPEndpoint:
    values: dict[str, object] = {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "path": server.remote_path(folder),
        "key_file": server.client_key,
        "known_hosts": server.known_hosts,
        "timeouts": Timeouts(connect=5, banner=5, auth=5, operation=10),
    }
    values.update(overrides)
    return SFTPEndpoint.model_validate(values)


def server_endpoint_toml(name: str, server: SftpServer, folder: Path) -> str:
    """An endpoint on one of the partner SFTP servers (tests/sftpservers.py)."""
    return f"""
[endpoints.{name}]
type = "sftp"
host = "{server.host}"
port = {server.port}
user = "{server.user}"
path = "{server.remote_path(folder)}"
key_file = "{server.client_key}"
known_hosts = "{server.known_hosts}"
timeouts = {{ connect = 5, banner = 5, auth = 5, operation = 10 }}
"""
