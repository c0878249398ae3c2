"""Where secrets come from, read one way whoever starts xchange.

A configuration names each secret by where it is, never by its value:

- ``password_env = "WMS_SFTP_PASSWORD"``: an environment variable;
- ``password_file = "/etc/xchange/wms.password"``: a file holding it (one trailing newline
  dropped), or a systemd credential, ``"$CREDENTIALS_DIRECTORY/wms"`` (``LoadCredential=``);
- and a top-level ``secrets = "/etc/xchange/secrets.env"``: ``KEY=value`` lines xchange
  reads itself (``python-dotenv``, no ``$`` expansion: ``pa$word1`` stays ``pa$word1``, a
  URL with ``&`` stays whole), which the ``*_env`` names are looked up in before the
  environment. The same file read the same way by cron, systemd and a shell: no
  ``. secrets.env`` in a crontab (``sh`` expands ``$`` and cuts at ``&``), no
  ``EnvironmentFile=`` (systemd's quoting rules differ), and the values stay out of every
  child process's environment. ``xchange reload`` reads them again (a rotated password).

A secrets file other users may read is refused: it would not be a secret.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from dotenv import dotenv_values
from dotenv.parser import parse_stream

from xchange.errors import ConfigError

#: The one variable a secret file's path may start with (systemd's credentials folder).
CREDENTIALS = "$CREDENTIALS_DIRECTORY"


class SecretExposed(ConfigError):
    """A secret's file that is not one: others may read it (a problem wherever xchange
    runs, not a secret this shell merely cannot see)."""


class SecretsMalformed(ConfigError):
    """A secrets file that is not one (a line without a value, bytes that are not
    UTF-8): wrong wherever xchange runs, not merely out of this shell's sight."""


def _private(path: Path) -> None:
    """Refuse a secret file others may read (or that is no regular file).

    Raises:
        ConfigError: naming the file and what is wrong.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror}"]) from None
    if not stat.S_ISREG(info.st_mode):
        raise SecretExposed([f"{path}: not a file"])
    if info.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        may = "read" if info.st_mode & stat.S_IROTH else "change"
        raise SecretExposed(
            [
                f"{path}: every user may {may} it (mode {stat.S_IMODE(info.st_mode):04o}): "
                "chmod o-rwx it (0600, or 0640 for the service's group)"
            ]
        )


def env_file(path: Path) -> dict[str, str]:
    """The ``KEY=value`` lines of a secrets file, values as written (quotes removed, no
    ``$`` expansion).

    Raises:
        SecretExposed: others may read or change it.
        SecretsMalformed: a line has no value, or the file is not UTF-8.
        ConfigError: the file is missing or this process cannot read it.
    """
    _private(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SecretsMalformed([f"{path}: not UTF-8 text: {exc.reason}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    # Every line is a KEY=value, a comment or blank: one that is none of them is said, not
    # passed over (python-dotenv would only warn and go on).
    unread = [b.original.line for b in parse_stream(io.StringIO(text)) if b.error]
    if unread:
        raise SecretsMalformed([f"{path}: line {n}: not KEY=value (nor a comment)" for n in unread])
    values = dotenv_values(stream=io.StringIO(text), interpolate=False)
    empty = sorted(key for key, value in values.items() if value is None)
    if empty:
        raise SecretsMalformed([f"{path}: {key}: a line without '=' and a value" for key in empty])
    return {key: value for key, value in values.items() if value is not None}


def secret_file(written: str, env: Mapping[str, str]) -> str:
    """The secret a file holds (its one trailing newline dropped); ``written`` may start
    with ``$CREDENTIALS_DIRECTORY``.

    Raises:
        ConfigError: the file is missing, unreadable or readable by others, or the
            credentials folder is not set.
    """
    if written.startswith(CREDENTIALS):
        folder = env.get("CREDENTIALS_DIRECTORY") or os.environ.get("CREDENTIALS_DIRECTORY")
        if not folder:
            raise ConfigError(
                [
                    f"{written}: CREDENTIALS_DIRECTORY is not set (systemd sets it for a unit "
                    "with LoadCredential=)"
                ]
            )
        written = folder + written[len(CREDENTIALS) :]
    path = Path(written)
    _private(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {exc}"]) from None
    return text[:-1] if text.endswith("\n") else text


__all__ = ["CREDENTIALS", "SecretExposed", "SecretsMalformed", "env_file", "secret_file"]
