"""Folders only xchange's own user may enter: the journal's, scratch space, staging,
quarantine. Each folder xchange creates on the way is made 0700 explicitly, whatever the
process's umask (``mkdir(parents=True)`` would give the parents 0777 under umask 000)."""

from __future__ import annotations

import os
from pathlib import Path


def private_folder(path: Path) -> Path:
    """Create ``path`` and its missing parents, each owner-only; existing folders are
    left as they are (they may be shared on purpose)."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, 0o700)
        except FileExistsError:
            continue  # made meanwhile by another thread or process
        os.chmod(folder, 0o700)
    return path
