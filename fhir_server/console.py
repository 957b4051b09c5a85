"""What long CLI commands print while they work (on stderr, so their stdout stays the result)."""

from __future__ import annotations

import sys


def bar(done: int, total: int, width: int = 32) -> str:
    """``[########........]``: how much of ``total`` is done."""
    filled = width if not total else int(width * min(done, total) / total)
    return f"[{'#' * filled}{'.' * (width - filled)}]"


def progress_bar(label: str, done: int, total: int, width: int = 32) -> None:
    end = "\n" if done >= total else ""
    print(f"\r{label} {bar(done, total, width)} {done}/{total}", end=end, file=sys.stderr, flush=True)
