"""The service install recipe: tools/install.sh makes the user's folders, files and unit
with the owners and modes the service needs; systemd accepts the unit; the nightly
crontab line and the daemon read the secrets file the same way (xchange reads it)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0, reason="the install recipe makes users and owners: it runs as root"
    ),
    # One worker builds the service's venv once, for every test here.
    pytest.mark.xdist_group("install"),
]
USER = "nobody"


@pytest.fixture
def staged() -> Iterator[Path]:
    """A folder the service user can reach (pytest's own are root's only)."""
    base = Path(tempfile.mkdtemp(prefix="xchange-install-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_install(tmp_path: Path, *extra: str, code: int = 0) -> tuple[dict[str, Path], str]:
    """tools/install.sh into a staged tree: its paths, and what it said."""
    paths = {name: tmp_path / name for name in ("opt", "etc", "state", "logs", "units", "bin")}
    result = subprocess.run(
        [
            "bash",
            str(REPO / "tools" / "install.sh"),
            "--prefix",
            str(paths["opt"]),
            "--etc",
            str(paths["etc"]),
            "--state",
            str(paths["state"]),
            "--logs",
            str(paths["logs"]),
            "--unit-dir",
            str(paths["units"]),
            "--bin-dir",
            str(paths["bin"]),
            "--user",
            USER,
            "--no-systemctl",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == code, result.stdout + result.stderr
    return paths, result.stderr


@pytest.fixture(scope="module")
def built() -> Iterator[dict[str, Path]]:
    """The recipe as a new host runs it: the venv made by install.sh itself (from a Python
    the service user can run, whatever root's own python3 is), once for this module."""
    base = Path(tempfile.mkdtemp(prefix="xchange-install-built-"))
    base.chmod(0o755)
    try:
        paths, said = run_install(base)
        paths["venv"] = paths["opt"] / "venv"
        assert "installing xchange into" in said
        yield paths
    finally:
        shutil.rmtree(base, ignore_errors=True)


def install(tmp_path: Path, built: dict[str, Path]) -> dict[str, Path]:
    """tools/install.sh into a staged tree, with the venv the recipe built."""
    paths, _ = run_install(tmp_path, "--venv", str(built["venv"]))
    paths["venv"] = built["venv"]
    return paths


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def owner(path: Path) -> tuple[str, str]:
    import grp
    import pwd

    st = path.stat()
    return pwd.getpwuid(st.st_uid).pw_name, grp.getgrgid(st.st_gid).gr_name


def readable_by(user: str, path: Path) -> bool:
    return (
        subprocess.run(
            ["runuser", "-u", user, "--", "test", "-r", str(path)], check=False
        ).returncode
        == 0
    )


def test_the_unit_file_passes_systemd_analyze_verify(staged: Path, built: dict[str, Path]) -> None:
    """The installed unit runs the venv's xchange as the service user, leaves the secrets
    file to xchange (no EnvironmentFile: one reader), reloads with `xchange reload`, and
    `systemd-analyze verify` accepts it."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail("systemd-analyze is missing: tests/run-all.sh installs it (systemd)")
    paths = install(staged, built)
    unit = paths["units"] / "xchange.service"
    text = unit.read_text()
    assert f"ExecStart={paths['venv']}/bin/xchange --log-format json run" in text
    assert f"ExecReload={paths['venv']}/bin/xchange reload" in text
    assert not [line for line in text.splitlines() if line.startswith("EnvironmentFile")]
    assert f"User={USER}" in text and f"WorkingDirectory={paths['state']}" in text
    # A stop's SIGTERM goes to xchange alone: the OpenSSH client of a big file in hand
    # finishes it (the default control-group mode ended it at once).
    assert "KillMode=mixed" in text
    verify = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60, check=False
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    shipped = subprocess.run(
        [analyze, "verify", str(REPO / "config" / "xchange.service")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # The shipped template names the recipe's default venv, which this machine lacks:
    # that is the only thing systemd may say of it.
    problems = [line for line in shipped.stderr.splitlines() if line.strip()]
    assert all("/opt/xchange/venv/bin/xchange is not executable" in p for p in problems), problems


def test_folders_and_files_have_the_owners_and_modes_the_service_needs(
    staged: Path, built: dict[str, Path]
) -> None:
    """Secrets 0640 root:group (the service user reads them, others do not), known_hosts
    0644 (public keys, pinned by root, read by the service), state owned by the user;
    xchange on the PATH; a second run changes nothing it should not."""
    paths = install(staged, built)
    group = owner(paths["state"])[1]
    secrets = paths["etc"] / "secrets.env"
    assert (mode(secrets), owner(secrets)) == ("0o640", ("root", group))
    assert readable_by(USER, secrets)
    known = paths["etc"] / "known_hosts"
    assert mode(known) == "0o644" and readable_by(USER, known)
    assert (mode(paths["etc"]), owner(paths["etc"])) == ("0o750", ("root", group))
    assert (mode(paths["state"]), owner(paths["state"])[0]) == ("0o750", USER)
    assert os.readlink(paths["bin"] / "xchange") == str(paths["venv"] / "bin" / "xchange")
    secrets.write_text("XCHANGE_HOOK_URL=http://127.0.0.1:9/x\n")
    install(staged, built)  # upgrade in place: the secrets stay
    assert secrets.read_text() == "XCHANGE_HOOK_URL=http://127.0.0.1:9/x\n"
    assert mode(secrets) == "0o640"


def test_the_nightly_crontab_line_reads_the_secrets_as_written(
    staged: Path, built: dict[str, Path]
) -> None:
    """The crontab's command runs `run --once` alone; xchange reads secrets.env itself:
    with the variable in the file the run exits 0 and the value is taken as written (a `$`
    and an `&` in it kept); without it, 2 naming the variable."""
    paths = install(staged, built)
    inbox = paths["state"] / "inbox"
    inbox.mkdir()
    (paths["etc"] / "xchange.toml").write_text(
        f"""
secrets = "{paths["etc"]}/secrets.env"

[journal]
path = "{paths["state"]}/journal.sqlite"

[quarantine]
path = "{paths["state"]}/quarantine"

[endpoints.drop]
type = "local"
path = "{inbox}"

[endpoints.out]
type = "local"
path = "{paths["state"]}/out"

[[routes]]
name = "nightly-copy"
source = {{ endpoint = "drop", pattern = "*.csv" }}
mapping = "copy"
target = {{ endpoint = "out", name = "{{source_name}}" }}
ready = {{ settle = 0 }}

[alerts]
[[alerts.sinks]]
type = "webhook"
url_env = "XCHANGE_HOOK_URL"
timeout = 2
""",
        encoding="utf-8",
    )
    (inbox / "a.csv").write_text("x\n")
    line = next(
        x for x in (paths["etc"] / "crontab.example").read_text().splitlines() if x[:1].isdigit()
    )
    command = line.split(None, 5)[5]
    assert "secrets.env" not in command  # (no shell reads it: xchange does)
    secrets = paths["etc"] / "secrets.env"
    env = {"PATH": "/usr/bin:/bin", "HOME": str(staged)}  # what cron gives a job
    secrets.write_text("# no secrets yet\n")
    missing = subprocess.run(["sh", "-c", command], env=env, timeout=120, check=False)
    log = (paths["logs"] / "nightly.log").read_text()
    assert missing.returncode == 2, log
    assert "url_env: environment variable XCHANGE_HOOK_URL is not set" in log
    secrets.write_text("XCHANGE_HOOK_URL=http://127.0.0.1:9/x?a=1&b=$c\n")
    ran = subprocess.run(["sh", "-c", command], env=env, timeout=120, check=False)
    log = (paths["logs"] / "nightly.log").read_text()
    assert ran.returncode == 0, log
    assert (paths["state"] / "out" / "a.csv").read_text() == "x\n"
    assert "127.0.0.1:9/x" not in log  # the secret URL is never logged


def as_user(*argv: str) -> subprocess.CompletedProcess[str]:
    """A command run as the service user, with what cron would give it."""
    return subprocess.run(
        [shutil.which("runuser") or "/usr/sbin/runuser", "-u", USER, "--", *argv],
        capture_output=True,
        text=True,
        timeout=180,
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
        check=False,
    )


def test_the_service_user_checks_and_runs_what_the_recipe_installed(
    built: dict[str, Path],
) -> None:
    """The venv the recipe made runs as the service user (root's own python3 is a pyenv
    under /root here: the recipe made it from one the user can run); the example it
    installs names this install's folders and the shipped formats, and `check` finds them;
    then a real nightly exchange converts the shipped sample as the service user."""
    paths = built
    xchange = str(paths["bin"] / "xchange")
    version = as_user(xchange, "--version")
    assert version.returncode == 0, version.stderr
    assert not str(paths["venv"] / "bin" / "python").startswith("/root")
    example = (paths["etc"] / "xchange.toml.example").read_text()
    assert f'formats = "{paths["opt"]}/formats"' in example
    assert f'path = "{paths["state"]}/journal.sqlite"' in example
    assert "/var/lib/xchange" not in example and '"../formats"' not in example
    assert f"--config {paths['etc']}/xchange.toml" in example  # (what to type, here)
    checked = as_user(xchange, "check", "--config", str(paths["etc"] / "xchange.toml.example"))
    # What is left for the person installing: the SFTP key they have not made yet.
    problems = [line for line in checked.stdout.splitlines() + checked.stderr.splitlines() if line]
    assert problems and all("key_file" in p for p in problems), problems
    inbox = paths["state"] / "inbox"
    inbox.mkdir()
    shutil.chown(inbox, USER)
    config = paths["etc"] / "xchange.toml"
    # The example as a person would finish it (the WMS's folder local here), its secrets
    # in the secrets file the service user reads.
    finished = example.replace('path = "/srv/exchange/shop/outbox"', f'path = "{inbox}"')
    head, rest = finished.split("[endpoints.wms-sftp]", 1)
    local = f'[endpoints.wms-sftp]\ntype = "local"\npath = "{paths["state"]}/out"\n\n'
    config.write_text(head + local + "[[routes]]" + rest.split("[[routes]]", 1)[1])
    (paths["etc"] / "secrets.env").write_text(
        "XCHANGE_WECOM_URL='http://127.0.0.1:9/send?key=a&b'\nXCHANGE_SMTP_PASSWORD=pa$word1\n"
    )
    sample = REPO / "samples" / "shop-orders" / "in" / "orders_20261121.csv"
    shutil.copy(sample, inbox / sample.name)
    (inbox / (sample.name + ".ok")).write_text("")
    shutil.chown(inbox / sample.name, USER)
    shutil.chown(inbox / (sample.name + ".ok"), USER)
    ok = as_user(xchange, "check", "--config", str(config))
    assert ok.returncode in (0, 2), ok.stdout + ok.stderr
    ran = as_user(xchange, "--log-format", "json", "run", "--once", "--config", str(config))
    assert "shop-orders: 1 delivered (3 documents)" in ran.stdout, ran.stdout + ran.stderr
    expected = REPO / "samples" / "shop-orders" / "expected"
    for out in expected.iterdir():
        assert (paths["state"] / "out" / out.name).read_bytes() == out.read_bytes()


def test_an_upgrade_stops_where_the_configuration_would_lose_its_secrets(
    staged: Path, built: dict[str, Path]
) -> None:
    """An installation whose unit loaded secrets.env: its configuration names no secrets
    file; the upgrade stops and names the line to add, instead of leaving the service
    without its secrets."""
    paths = install(staged, built)
    (paths["etc"] / "secrets.env").write_text("XCHANGE_HOOK_URL=http://127.0.0.1:9/x\n")
    (paths["etc"] / "xchange.toml").write_text('formats = "formats"\n')
    _, said = run_install(staged, "--venv", str(built["venv"]), code=2)
    assert f'secrets = "{paths["etc"]}/secrets.env"' in said
