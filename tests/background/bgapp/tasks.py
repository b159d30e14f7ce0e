"""Plain django-q2 tasks (no workflow) for the broker tests: each records that it ran.

``note(directory, label)`` appends ``<label> <pid>`` to ``<directory>/tasks.txt``
(``O_APPEND`` and fsync'ed, as the workflows' effects); ``hold(directory, label)`` does
the same, then, on its first delivery only, writes ``<directory>/held`` and sleeps so
that a test can kill the cluster while it holds claimed tasks.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

TASKS_FILE = "tasks.txt"
HELD_FILE = "held"
HOLD_SECONDS = 60


def note(directory: str, label: str) -> str:
    fd = os.open(Path(directory) / TASKS_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{label} {os.getpid()}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    return label


def hold(directory: str, label: str) -> str:
    note(directory, label)
    held = Path(directory) / HELD_FILE
    if not held.exists():
        held.write_text(str(os.getpid()))
        time.sleep(HOLD_SECONDS)
    return label


def read_notes(directory: str | Path) -> list[tuple[str, int]]:
    """The ``(label, pid)`` lines written so far, in order."""
    path = Path(directory) / TASKS_FILE
    if not path.exists():
        return []
    lines = (line.split() for line in path.read_text().splitlines())
    return [(label, int(pid)) for label, pid in lines]
