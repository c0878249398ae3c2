"""Each third-party library is used from one place; the library never imports click."""

from __future__ import annotations

import ast
from pathlib import Path

import xchange

PACKAGE = Path(xchange.__file__).parent

#: library -> the only modules allowed to import it
OWNERS = {
    "paramiko": {"remote/sftp.py"},
    "lxml": {"codecs/xml_codec.py"},
    "pandas": {"codecs/csv_codec.py", "codecs/csv_columnar.py"},  # the CSV codec, fast path
    "click": {"cli/__init__.py", "cli/main.py", "cli/records.py"},
    "tenacity": {"retry.py"},
    "sqlite3": {"journal/sqlite.py"},
    "tomllib": {"config.py", "layout.py"},
    "watchdog": {"watcher.py"},
    "apscheduler": {"daemon.py"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


def test_each_third_party_library_has_one_home() -> None:
    """paramiko, lxml, pandas, click, ... are each imported only by their owning module."""
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE).as_posix()
        for lib in imported_roots(path) & OWNERS.keys():
            if rel not in OWNERS[lib]:
                offenders.append(f"{rel} imports {lib}")
    assert offenders == []


def test_no_host_key_auto_add_and_no_entity_resolution() -> None:
    """The package never trusts unknown host keys nor resolves XML entities."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    assert "AutoAddPolicy" not in text and "WarningPolicy" not in text
    assert "resolve_entities=True" not in text
