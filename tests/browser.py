"""A real headless browser (Debian's chromium) for the status page's tests."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest


def browser() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.fail(
            "chromium is not installed: run the test command from README.md "
            "(bash tests/run-all.sh), which installs it (apt-get install chromium)"
        )
    return found


def headless(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            browser(),
            "--headless",
            "--no-sandbox",  # tests may run as root
            "--disable-gpu",
            "--no-first-run",
            f"--user-data-dir={home}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=90,
        env={"HOME": str(home), "PATH": "/usr/bin:/bin"},
    )
