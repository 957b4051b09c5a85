"""What long CLI commands print while they work (on stderr, so their stdout stays the result)."""

from __future__ import annotations

import sys


def progress_bar(label: str, done: int, total: int, width: int = 32) -> None:
    filled = width if not total else int(width * min(done, total) / total)
    end = "\n" if done >= total else ""
    print(f"\r{label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end=end, file=sys.stderr, flush=True)
