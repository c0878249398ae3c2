"""Secrets read one way: a secrets file xchange reads itself (no shell, no systemd quoting:
``pa$word1`` and a URL with ``&`` stay whole), secrets from files and systemd credentials,
refused when others may read them, and a rotated password taken by ``xchange reload``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from tests.conftest import Exchange
from tests.daemons import daemon, fast
from tests.procs import wait_for, xchange_argv, xchange_env
from tests.sftp_routes import sftp_target
from tests.sshd import SshServer
from xchange.cli import main
from xchange.config import load_config
from xchange.errors import ConfigError

HOOK = "https://oapi.example.com/robot/send?access_token=ab$cd&sign=x%3D"


def with_sink(exchange: Exchange, sink: str, secrets: Path | None = None) -> None:
    text = exchange.config.read_text()
    top = f'secrets = "{secrets}"\n' if secrets else ""
    exchange.config.write_text(
        top + text.replace("[[routes]]", f"[alerts]\n[[alerts.sinks]]\n{sink}\n\n[[routes]]", 1)
    )


def private(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return path


def test_a_secrets_file_is_read_as_written_and_wins_over_the_environment(
    exchange: Exchange, tmp_path: Path
) -> None:
    secrets = private(
        tmp_path / "secrets.env",
        "# the robot's address\nHOOK_URL='" + HOOK + "'\nSMTP_PW=pa$word1\n",
    )
    with_sink(exchange, 'type = "webhook"\nurl_env = "HOOK_URL"', secrets)
    text = exchange.config.read_text().replace(
        "[[routes]]",
        '[[alerts.sinks]]\ntype = "email"\nhost = "127.0.0.1"\nuser = "x"\n'
        'password_env = "SMTP_PW"\nfrom = "x@example.com"\nto = ["ops@example.com"]\n\n'
        "[[routes]]",
        1,
    )
    exchange.config.write_text(text)
    config = load_config(exchange.config, env={"HOOK_URL": "https://stale.example.com/"})
    hook, mail = config.alerts.sinks
    assert hook.secret_url is not None and mail.password is not None  # type: ignore[union-attr]
    assert hook.secret_url.get_secret_value() == HOOK  # type: ignore[union-attr]
    assert mail.password.get_secret_value() == "pa$word1"  # type: ignore[union-attr]


def test_a_secret_from_a_file_or_a_systemd_credential(exchange: Exchange, tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    private(credentials / "robot", HOOK + "\n", 0o400)
    with_sink(exchange, 'type = "webhook"\nurl_file = "$CREDENTIALS_DIRECTORY/robot"')
    config = load_config(exchange.config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert config.alerts.sinks[0].secret_url.get_secret_value() == HOOK  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as unset:
        load_config(exchange.config, env={})
    assert "CREDENTIALS_DIRECTORY is not set" in unset.value.problems[0]


@pytest.mark.parametrize(
    ("sink", "mode", "said"),
    [
        ('type = "webhook"\nurl_file = "hook.txt"', 0o644, "every user may read it (mode 0644)"),
        ('type = "webhook"\nurl_file = "hook.txt"', 0o602, "every user may change it (mode 0602)"),
        ('type = "webhook"\nurl_file = "hook.txt"\nurl_env = "X"', 0o600, "exactly one of url"),
    ],
)
def test_secrets_others_may_read_or_given_twice_are_refused(
    exchange: Exchange, sink: str, mode: int, said: str
) -> None:
    private(exchange.config.parent / "hook.txt", HOOK, mode)
    with_sink(exchange, sink)
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 2, checked.output
    assert said in checked.output
    assert HOOK not in checked.output


def test_a_secret_file_not_there_is_a_note_for_check_and_stops_a_run(exchange: Exchange) -> None:
    """(A service's own file may be out of sight of the shell check runs in.)"""
    with_sink(exchange, 'type = "webhook"\nurl_file = "nowhere.txt"')
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 0 and "nowhere.txt: no such file here" in checked.output
    ran = CliRunner().invoke(main, ["run", "--once", "--config", str(exchange.config)])
    assert ran.exit_code == 2 and "nowhere.txt: no such file" in ran.output


def test_a_world_readable_secrets_file_is_refused(exchange: Exchange, tmp_path: Path) -> None:
    secrets = private(tmp_path / "secrets.env", "HOOK_URL=x\n", 0o644)
    with_sink(exchange, 'type = "webhook"\nurl_env = "HOOK_URL"', secrets)
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 2
    assert f"secrets: {secrets}: every user may read it" in checked.output


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("HOOK_URL=x\nOTHER\n", "OTHER: a line without '=' and a value"),
        ("HOOK_URL=x\nno value here\n", "line 2: not KEY=value (nor a comment)"),
        (None, "not UTF-8 text"),
    ],
)
def test_a_malformed_secrets_file_is_a_problem_not_a_note(
    exchange: Exchange, tmp_path: Path, text: str | None, said: str
) -> None:
    """A broken secrets file is wrong wherever xchange runs: check refuses it (exit 2),
    rather than noting its secrets as out of this shell's sight."""
    secrets = tmp_path / "secrets.env"
    if text is None:
        secrets.write_bytes("HOOK_URL=\u5bc6\n".encode("gbk"))
        secrets.chmod(0o600)
    else:
        private(secrets, text)
    with_sink(exchange, 'type = "webhook"\nurl_env = "HOOK_URL"', secrets)
    checked = CliRunner().invoke(main, ["check", "--config", str(exchange.config)])
    assert checked.exit_code == 2, checked.output
    assert f"secrets: {secrets}: " in checked.output and said in checked.output


def test_a_rotated_password_is_taken_by_reload(
    exchange: Exchange, sshd: SshServer, tmp_path: Path
) -> None:
    """The partner's SFTP password changes: the daemon's files wait (the old one is
    refused); the new one goes into the secrets file; `xchange reload`; they go."""
    if sshd.password_user is None or sshd.password is None:
        pytest.skip("password logins need a throwaway system user, which only root can create")
    folder = sshd.folder("rotated")
    secrets = private(tmp_path / "secrets.env", "WMS_PW=old-and-wrong$1\n")
    fast(exchange)
    sftp_target(exchange, sshd, folder)
    text = exchange.config.read_text()
    text = text.replace(f'user = "{sshd.user}"', f'user = "{sshd.password_user}"')
    text = text.replace(f'key_file = "{sshd.client_key}"\n', 'password_env = "WMS_PW"\n')
    assert 'password_env = "WMS_PW"' in text
    exchange.config.write_text(f'secrets = "{secrets}"\n' + text)
    with daemon(exchange) as proc:
        exchange.drop_sample()
        wait_for(
            lambda: '"cause": "auth"' in (exchange.root / "daemon.log").read_text(),
            what="the old password refused",
        )
        assert not any(folder.iterdir())
        private(secrets, f"WMS_PW={sshd.password}\n")
        reloaded = subprocess.run(
            xchange_argv(exchange.config, "reload"),
            capture_output=True,
            text=True,
            env=xchange_env(),
            check=False,
        )
        assert reloaded.returncode == 0, reloaded.stderr
        subprocess.run(
            xchange_argv(exchange.config, "retry"),
            env=xchange_env(),
            check=True,
            capture_output=True,
        )
        wait_for(lambda: len(list(folder.iterdir())) == 3, what="delivered with the new password")
        assert proc.poll() is None
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    log = (exchange.root / "daemon.log").read_text()
    assert sshd.password not in log and "old-and-wrong" not in log
    assert b"WMS_PW" not in environ  # (read by xchange itself, never in its environment)
