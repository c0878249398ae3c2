"""SFTP delivery against a real OpenSSH sshd on 127.0.0.1; paramiko talks to it for real."""

from __future__ import annotations

import base64
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import SAMPLES, Exchange
from tests.sftp_routes import endpoint, put, sftp_target_toml
from tests.sshd import SshServer, keygen
from xchange.cli import main
from xchange.errors import (
    AuthenticationFailed,
    ConnectionLost,
    HostKeyMismatch,
    HostKeyUnknown,
    RemoteError,
    RemoteUnavailable,
    TargetExists,
)
from xchange.remote.sftp import SFTPRemote

pytestmark = pytest.mark.sftp

EXPECTED = SAMPLES / "shop-orders" / "expected"


def test_put_atomic_delivers_with_key_auth(sshd: SshServer) -> None:
    """A file uploaded with key authentication lands complete under its final name."""
    folder = sshd.folder("key-auth")
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    try:
        info = put(remote, "a.xml", b"<a/>\n", temp_name=".a.xml.t.xchange-part", overwrite=False)
    finally:
        remote.close()
    assert info.size == 5
    assert (folder / "a.xml").read_bytes() == b"<a/>\n"
    assert sorted(os.listdir(folder)) == ["a.xml"]


def test_password_auth_from_environment_secret(sshd: SshServer) -> None:
    """Password authentication works with the password taken from the configuration secret."""
    if sshd.password_user is None:
        pytest.skip("password logins need a throwaway system user, which only root can create")
    folder = sshd.folder("password-auth")
    cfg = endpoint(
        sshd,
        folder,
        user=sshd.password_user,
        key_file=None,
        password=sshd.password,
        password_env="UNUSED",
    )
    remote = SFTPRemote("wms", cfg)
    try:
        put(remote, "p.xml", b"pw", temp_name=".p.xml.t.xchange-part", overwrite=False)
    finally:
        remote.close()
    assert (folder / "p.xml").read_bytes() == b"pw"


def test_wrong_password_is_an_authentication_error_without_the_password(sshd: SshServer) -> None:
    """A refused password says 'refused' and never repeats the password."""
    if sshd.password_user is None:
        pytest.skip("password logins need a throwaway system user, which only root can create")
    cfg = endpoint(
        sshd,
        sshd.folder("bad-pw"),
        user=sshd.password_user,
        key_file=None,
        password="not-the-password-42",
        password_env="UNUSED",
    )
    with pytest.raises(AuthenticationFailed) as info:
        SFTPRemote("wms", cfg).list()
    assert "not-the-password-42" not in str(info.value)
    assert not info.value.retryable


def test_unknown_host_key_is_refused_with_advice(sshd: SshServer, tmp_path: Path) -> None:
    """A server missing from known_hosts is refused, and the message says how to trust it."""
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    remote = SFTPRemote("wms", endpoint(sshd, sshd.folder("unknown"), known_hosts=empty))
    with pytest.raises(HostKeyUnknown, match="xchange trust wms"):
        remote.list()
    assert not empty.read_text()  # nothing was added behind the operator's back


def test_changed_host_key_is_refused(sshd: SshServer, tmp_path: Path) -> None:
    """A server whose key differs from the pinned one is refused as a possible attack."""
    other = keygen(tmp_path / "other")
    pub = (tmp_path / "other.pub").read_text().split()
    pinned = tmp_path / "known_hosts"
    pinned.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    remote = SFTPRemote("wms", endpoint(sshd, sshd.folder("changed"), known_hosts=pinned))
    with pytest.raises(HostKeyMismatch, match="CHANGED") as info:
        remote.list()
    assert not info.value.retryable
    # The fix is in the reason as alerts and the journal show it (300 characters): before,
    # it was cut off, and named `xchange trust` without --replace (which a changed key needs).
    assert "`xchange trust wms --replace`" in info.value.reason
    assert other.exists()


def test_refused_connection_is_transient(sshd: SshServer) -> None:
    """Nothing listening is a retryable 'unavailable', reported within the timeout."""
    from tests.sshd import free_port

    cfg = endpoint(sshd, sshd.folder("refused"), port=free_port())
    with pytest.raises(RemoteUnavailable) as info:
        SFTPRemote("wms", cfg).list()
    assert info.value.retryable


def test_receiver_never_sees_a_partial_file_under_the_final_name(sshd: SshServer) -> None:
    """While a large upload runs, the final name is absent or complete, never partial."""
    folder = sshd.folder("partial")
    payload = os.urandom(24 * 1024 * 1024)
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    seen_temp = 0
    bad: list[int] = []
    done = threading.Event()

    def receiver() -> None:
        nonlocal seen_temp
        deadline = time.monotonic() + 60
        while not done.is_set() and time.monotonic() < deadline:
            for name in os.listdir(folder):
                if name == "big.bin":
                    size = (folder / name).stat().st_size
                    if size != len(payload):
                        bad.append(size)
                elif name.endswith(".xchange-part"):
                    seen_temp += 1

    watcher = threading.Thread(target=receiver)
    watcher.start()
    try:
        put(remote, "big.bin", payload, temp_name=".big.bin.x.xchange-part", overwrite=False)
    finally:
        done.set()
        watcher.join(timeout=30)
        remote.close()
    assert bad == []
    assert seen_temp > 0, "the upload was never observed in progress; the test proved nothing"
    assert (folder / "big.bin").read_bytes() == payload
    assert os.listdir(folder) == ["big.bin"]


def test_connection_cut_mid_upload_leaves_no_final_name(sshd: SshServer) -> None:
    """A session dropped during the upload raises a retryable error and publishes nothing."""
    folder = sshd.folder("cut")
    payload = os.urandom(32 * 1024 * 1024)
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    remote.list()  # connect first

    def cut_when_started() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            temp = folder / ".big.bin.y.xchange-part"
            if temp.exists() and temp.stat().st_size > 0:
                transport = remote._ssh.get_transport() if remote._ssh else None
                if transport is not None:
                    transport.sock.close()  # what a network cut looks like to the client
                return
            time.sleep(0.001)

    cutter = threading.Thread(target=cut_when_started)
    cutter.start()
    with pytest.raises(RemoteError) as info:
        put(remote, "big.bin", payload, temp_name=".big.bin.y.xchange-part", overwrite=False)
    cutter.join(timeout=30)
    assert info.value.retryable, repr(info.value)
    assert not (folder / "big.bin").exists()
    # The same delivery retried on a fresh connection completes and cleans up.
    put(remote, "big.bin", payload, temp_name=".big.bin.y.xchange-part", overwrite=False)
    remote.close()
    assert (folder / "big.bin").read_bytes() == payload
    assert os.listdir(folder) == ["big.bin"]


def test_existing_final_name_is_not_overwritten_without_overwrite(sshd: SshServer) -> None:
    """With overwrite off, a file already under the final name is left alone."""
    folder = sshd.folder("exists")
    (folder / "x.xml").write_bytes(b"theirs")
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    with pytest.raises(TargetExists):
        put(remote, "x.xml", b"ours", temp_name=".x.xml.t.xchange-part", overwrite=False)
    put(remote, "y.xml", b"v1", temp_name=".y.xml.t.xchange-part", overwrite=True)
    put(remote, "y.xml", b"v2", temp_name=".y.xml.t.xchange-part", overwrite=True)
    remote.close()
    assert (folder / "x.xml").read_bytes() == b"theirs"
    assert (folder / "y.xml").read_bytes() == b"v2"
    assert sorted(os.listdir(folder)) == ["x.xml", "y.xml"]


def test_reconnects_after_the_server_restarts(sshd: SshServer) -> None:
    """A session killed by a server restart is replaced on the next operation."""
    folder = sshd.folder("restart")
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    put(remote, "1.xml", b"1", temp_name=".1.xml.t.xchange-part", overwrite=False)
    sshd.restart()
    # Existing sessions die with the old server process only if it is killed; drop ours too.
    if remote._ssh is not None and remote._ssh.get_transport() is not None:
        remote._ssh.get_transport().sock.close()  # type: ignore[union-attr]
    # The dead session is noticed either up front (reconnect at once) or by the first
    # operation, which fails as a retryable ConnectionLost; the next one reconnects.
    try:
        remote.list()
    except ConnectionLost as exc:
        assert exc.retryable
    put(remote, "2.xml", b"2", temp_name=".2.xml.t.xchange-part", overwrite=False)
    remote.close()
    assert sorted(os.listdir(folder)) == ["1.xml", "2.xml"]


def test_run_once_delivers_the_sample_orders_over_sftp(exchange: Exchange, sshd: SshServer) -> None:
    """The demo route with an SFTP target delivers the golden files, then nothing twice."""
    folder = sshd.folder("e2e")
    exchange.write_config(target=sftp_target_toml(sshd, folder))
    exchange.drop_sample()
    runner = CliRunner()
    first = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert first.exit_code == 0, first.output
    for golden in EXPECTED.iterdir():
        assert (folder / golden.name).read_bytes() == golden.read_bytes()
    assert sorted(os.listdir(folder)) == sorted(p.name for p in EXPECTED.iterdir())
    exchange.drop_sample()
    second = runner.invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert second.exit_code == 0
    assert "1 duplicate" in second.stdout


def test_run_once_with_unknown_host_key_delivers_nothing_and_exits_3(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """An unpinned server stops the route: the file stays in the drop folder, exit 3."""
    folder = sshd.folder("e2e-unknown")
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    exchange.write_config(target=sftp_target_toml(sshd, folder, known_hosts=empty))
    exchange.drop_sample()
    result = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert result.exit_code == 3
    assert "xchange trust wms-outbox" in result.stdout
    assert (exchange.inbox / "orders_20261121.csv").exists()
    assert os.listdir(folder) == []


def test_trust_shows_the_fingerprint_and_pins_on_confirmation(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """`xchange trust` prints the server's fingerprint and pins it only when confirmed."""
    known = tmp_path / "pinned_known_hosts"
    exchange.write_config(target=sftp_target_toml(sshd, sshd.folder("trust"), known_hosts=known))
    runner = CliRunner()
    declined = runner.invoke(
        main, ["trust", "--config", str(exchange.config), "wms-outbox"], input="n\n"
    )
    assert declined.exit_code == 1
    assert "SHA256:" in declined.stdout
    assert "not pinned: nothing changed in" in declined.stderr
    assert "goes on refusing wms-outbox until its key is pinned" in declined.stderr
    assert not known.exists()
    accepted = runner.invoke(
        main, ["trust", "--config", str(exchange.config), "wms-outbox"], input="y\n"
    )
    assert accepted.exit_code == 0, accepted.output
    host_pub = (sshd.host_key.with_suffix(".pub")).read_text().split()[1]
    assert host_pub in known.read_text()
    assert f"[127.0.0.1]:{sshd.port}" in known.read_text()
    # Host keys are public: a new file is 0644, so the service's user can read what root
    # pinned.
    assert oct(known.stat().st_mode & 0o777) == "0o644"
    # The pinned key now lets a delivery through.
    remote = SFTPRemote("wms", endpoint(sshd, sshd.folder("trust"), known_hosts=known))
    remote.list()
    remote.close()
    again = runner.invoke(main, ["trust", "--config", str(exchange.config), "wms-outbox"])
    assert again.exit_code == 0 and "already pinned" in again.stdout


def test_trust_shows_a_changed_key_beside_the_old_and_replaces_it_only_when_told(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """A host whose pinned key differs from the one it offers: both fingerprints shown,
    refused without --replace (even with --yes); replaced with it, the file's other lines,
    mode and owner kept."""
    known = tmp_path / "known_hosts"
    old_type, old_key = sshd.client_key.with_suffix(".pub").read_text().split()[:2]
    other = f"other.example.com ssh-ed25519 {old_key}"
    known.write_text(f"# pinned by hand\n[127.0.0.1]:{sshd.port} {old_type} {old_key}\n{other}\n")
    known.chmod(0o640)
    exchange.write_config(target=sftp_target_toml(sshd, sshd.folder("rekey"), known_hosts=known))
    digest = hashlib.sha256(base64.b64decode(old_key)).digest()
    old_fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    refused = CliRunner().invoke(
        main, ["trust", "--config", str(exchange.config), "wms-outbox", "--yes"]
    )
    assert refused.exit_code == 1
    assert f"pins {old_type} {old_fingerprint}" in refused.stdout
    assert "THE SERVER'S KEY HAS CHANGED" in refused.stdout
    assert "pass --replace" in refused.stderr
    assert old_key in known.read_text()
    replaced = CliRunner().invoke(
        main, ["trust", "--config", str(exchange.config), "wms-outbox", "--replace", "--yes"]
    )
    assert replaced.exit_code == 0, replaced.output
    text = known.read_text()
    host_pub = (sshd.host_key.with_suffix(".pub")).read_text().split()[1]
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519 {host_pub}" in text
    assert text.startswith("# pinned by hand\n") and other in text
    assert text.count(old_key) == 1  # only the other host's line still has it
    assert oct(known.stat().st_mode & 0o777) == "0o640"


def test_password_never_appears_in_logs_journal_or_output(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """A full exchange with a password login (and a failed one) leaks the password nowhere."""
    if sshd.password_user is None:
        pytest.skip("password logins need a throwaway system user, which only root can create")
    folder = sshd.folder("secret-scan")
    target = (
        sftp_target_toml(sshd, folder)
        .replace(f'user = "{sshd.user}"', f'user = "{sshd.password_user}"')
        .replace(f'key_file = "{sshd.client_key}"', 'password_env = "XCHANGE_TEST_PW"')
    )
    exchange.write_config(target=target)
    runner = CliRunner()
    outputs = []
    exchange.drop_sample()
    wrong = runner.invoke(
        main,
        ["--log-format", "json", "-v", "run", "--once", "--config", str(exchange.config)],
        env={"XCHANGE_TEST_PW": "wrong-" + (sshd.password or "")},
    )
    assert wrong.exit_code == 3
    outputs.append(wrong.output)
    right = runner.invoke(
        main,
        ["--log-format", "json", "-v", "run", "--once", "--config", str(exchange.config)],
        env={"XCHANGE_TEST_PW": sshd.password or ""},
    )
    assert right.exit_code == 0, right.output
    outputs.append(right.output)
    assert len(os.listdir(folder)) == 3
    secret = (sshd.password or "").encode()
    assert secret
    assert all(secret.decode() not in text for text in outputs)
    for path in exchange.root.rglob("*"):
        if path.is_file():
            assert secret not in path.read_bytes(), path


def test_a_changed_host_key_is_refused_on_every_run_and_alerted(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """Each run refuses the server (exit 3, nothing sent); the first raises an alert."""
    other = keygen(tmp_path / "impostor")
    pub = other.with_suffix(".pub").read_text().split()
    pinned = tmp_path / "known_hosts"
    pinned.write_text(f"[127.0.0.1]:{sshd.port} {pub[0]} {pub[1]}\n")
    folder = sshd.folder("host-key-alert")
    exchange.write_config(target=sftp_target_toml(sshd, folder, known_hosts=pinned))
    exchange.drop_sample()
    for attempt in range(2):
        result = CliRunner().invoke(
            main, ["--log-format", "json", "run", "--once", "--config", str(exchange.config)]
        )
        assert result.exit_code == 3
        assert "CHANGED" in result.stdout
        assert ('"event": "alert.sent"' in result.stderr) == (attempt == 0)
    assert os.listdir(folder) == []


def test_big_files_go_through_openssh_with_the_same_pinned_host_key(
    sshd: SshServer, tmp_path: Path
) -> None:
    """At or above accelerate_mb, OpenSSH's sftp moves the bytes (a second login shows in
    the server's log); the result is the same atomic, verified delivery and pickup."""
    folder = sshd.folder("accelerated")
    cfg = endpoint(sshd, folder, accelerate_mb=1)
    remote = SFTPRemote("wms", cfg)
    payload = os.urandom(3 * 1024 * 1024)
    src = tmp_path / "big.bin"
    src.write_bytes(payload)
    remote.list()
    logins = sshd.log().count("Accepted publickey")
    with open(src, "rb") as fh:
        remote.put_atomic(
            "big.bin", fh, len(payload), temp_name=".big.bin.a.xchange-part", overwrite=False
        )
    assert (folder / "big.bin").read_bytes() == payload
    assert sorted(os.listdir(folder)) == ["big.bin"]
    back = tmp_path / "back.bin"
    with open(back, "wb") as fh:
        remote.download("big.bin", fh)
    remote.close()
    assert back.read_bytes() == payload
    time.sleep(0.2)
    assert sshd.log().count("Accepted publickey") - logins == 2  # one put, one get


def test_the_connection_does_not_wait_for_delayed_acknowledgements(sshd: SshServer) -> None:
    """TCP_NODELAY is on: small SSH messages go out at once instead of waiting for the
    acknowledgement of the previous one (a 40 ms delayed ACK each)."""
    import socket

    remote = SFTPRemote("wms", endpoint(sshd, sshd.folder("nodelay")))
    remote.connect()
    try:
        transport = remote._ssh.get_transport() if remote._ssh else None
        assert transport is not None
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    finally:
        remote.close()


def test_a_rename_probe_in_a_folder_not_there_yet_is_no_verdict(
    sshd: SshServer, tmp_path: Path
) -> None:
    """The probe failed when the target folder did not exist yet and then assumed "rename
    replaces" until the process ended: a false warning on OpenSSH, and on a server without
    posix-rename every overwrite upload quarantined. Now it is learned again later."""
    from xchange.remote.sftp_wire import ServerTraits

    folder = sshd.base / "data" / "later-not-yet"
    remote = SFTPRemote("wms", endpoint(sshd, folder))
    remote.traits = ServerTraits()  # as a new process finds the server (learned once each)
    try:
        assert remote.learn_rename() is True  # unknown: the unsafe answer, for now
        assert remote.traits.rename_overwrites is None
        assert sshd.folder("later-not-yet") == folder  # a delivery made it
        assert remote.learn_rename() is False  # OpenSSH's rename refuses to replace
        assert remote.traits.rename_overwrites is False
    finally:
        remote.close()


def test_a_server_that_refuses_a_second_channel_is_used_without_its_extensions(
    tmp_path: Path,
) -> None:
    """The server's extensions are read on a channel of their own; an sshd that allows one
    session per connection refuses it: the delivery goes on, with no extension relied on,
    and the log says so once."""
    import shutil
    import tempfile

    from tests.sshd import start_sshd

    base = Path(tempfile.mkdtemp(prefix="xchange-sshd-"))
    server = start_sshd(base, max_sessions=1)
    try:
        folder = server.folder("one-session")
        remote = SFTPRemote("wms", endpoint(server, folder))
        try:
            put(remote, "a.xml", b"<a/>", temp_name=".a.xml.t.xchange-part", overwrite=False)
            assert remote.traits.hello and remote.traits.extensions == {}
        finally:
            remote.close()
        assert (folder / "a.xml").read_bytes() == b"<a/>"
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
