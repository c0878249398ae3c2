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


def endpoint_toml(
    name: str,
    sshd: SshServer | SftpServer,
    folder: Path | str,
    *,
    known_hosts: Path | None = None,
    port: int | None = None,
    login: float = 5,
    operation: float = 10,
    extra: str = "",
) -> str:
    """An SFTP endpoint of the tests' servers (``port``: a relay's, pinned for it too)."""
    return f"""
[endpoints.{name}]
type = "sftp"
host = "{sshd.host}"
port = {port or sshd.port}
user = "{sshd.user}"
path = "{folder}"
key_file = "{sshd.client_key}"
known_hosts = "{known_hosts or sshd.known_hosts}"
timeouts = {{ connect = {login}, banner = {login}, auth = {login}, operation = {operation} }}
{extra}"""


def server_target_toml(server: SftpServer, folder: Path) -> str:
    """The route's target endpoint on one of the other SFTP server kinds."""
    return server_endpoint_toml("wms-outbox", server, folder)


def sftp_target_toml(sshd: SshServer, folder: Path, known_hosts: Path | None = None) -> str:
    return endpoint_toml("wms-outbox", sshd, folder, known_hosts=known_hosts)


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
    return endpoint_toml(name, server, server.remote_path(folder))


COPY_ROUTE = """
[[routes]]
name = "copy"
source = {{ endpoint = "{source}", pattern = "*.bin" }}
mapping = "copy"
target = {{ endpoint = "{target}", name = "{{source_name}}" }}
after = {{ action = "delete" }}
ready = {{ settle = 0 }}
retry = {{ {retry} }}
"""


def copy_with_partner(
    exchange: Exchange,
    sshd: SshServer,
    folder: Path,
    *,
    port: int | None = None,
    pickup: bool = False,
    login: float = 5,
    operation: float = 10,
    retry: str = "attempts = 2, initial = 0.05, maximum = 0.2, later = 0",
    daemon_section: str = "",
    accelerate_mb: int = 1,
) -> None:
    """A "copy" route of ``*.bin`` files between the exchange's local folders and an SFTP
    endpoint ``partner`` (its target, or with ``pickup`` its source) on ``port`` (sshd's
    own, or a relay's, whose host key is pinned for it too), big files through OpenSSH's
    client (``accelerate_mb = 1``: pass 64, the default, to keep them on paramiko)."""
    port = port or sshd.port
    known = exchange.root / "known_hosts"
    known.write_text(
        sshd.known_hosts.read_text().replace(f"[127.0.0.1]:{sshd.port}", f"[127.0.0.1]:{port}")
    )
    exchange.write_config()
    partner = endpoint_toml(
        "partner",
        sshd,
        folder,
        known_hosts=known,
        port=port,
        login=login,
        operation=operation,
        extra=f"accelerate_mb = {accelerate_mb}\n",
    )
    source, target = ("partner", "wms-outbox") if pickup else ("shop-drop", "partner")
    text = exchange.config.read_text().replace(
        "[[routes]]", f"{daemon_section}{partner}\n[[routes]]", 1
    )
    exchange.config.write_text(text + COPY_ROUTE.format(source=source, target=target, retry=retry))
