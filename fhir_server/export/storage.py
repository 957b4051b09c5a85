"""Where export files live: a small interface, so an object store can replace the folder on disk later.

A file is written whole or not at all: ``writer`` fills a partial file that ``commit`` renames into place (after
an fsync), so a job resumed after a crash rewrites the type it was writing from the start, and a reader never sees
half a file.  Job ids and file names are checked here too (letters, digits, dots), whatever the caller checked:
nothing outside the export folder can be named.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Protocol

_JOB = re.compile(r"[0-9a-f]{32}")
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9]*(\.[0-9]+)?\.ndjson")
CHUNK = 64 * 1024


class FileWriter(Protocol):
    def write(self, data: bytes) -> None: ...


class ExportStorage(Protocol):
    def writer(self, job_id: str, name: str) -> contextlib.AbstractContextManager[FileWriter]:
        """A new file; it exists (replacing any earlier one of that name) only once the block ends normally."""
        ...

    def read(self, job_id: str, name: str) -> Iterator[bytes] | None:
        """The file's bytes in chunks, or None when there is no such file."""
        ...

    def remove(self, job_id: str) -> None:
        """Every file of the job, partial ones too; nothing when there are none."""
        ...

    def jobs(self) -> list[str]:
        """The ids of the jobs that have files (for removing what a removed job left behind)."""
        ...


def safe(job_id: str, name: str | None = None) -> bool:
    return bool(_JOB.fullmatch(job_id)) and (name is None or bool(_NAME.fullmatch(name)))


class _PartialFile:
    def __init__(self, handle: IO[bytes]) -> None:
        self._handle = handle

    def write(self, data: bytes) -> None:
        self._handle.write(data)


class DirectoryStorage:
    """``<root>/<job id>/<Type>.ndjson``, folders and files readable by the server's user only (patient data)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _folder(self, job_id: str) -> Path:
        if not safe(job_id):
            raise ValueError("not an export job id")
        return self.root / job_id

    @contextlib.contextmanager
    def writer(self, job_id: str, name: str) -> Iterator[FileWriter]:
        if not safe(job_id, name):
            raise ValueError("not an export file name")
        folder = self._folder(job_id)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        final, partial = folder / name, folder / f"{name}.partial"
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(descriptor, "wb", buffering=CHUNK) as handle:
                yield _PartialFile(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise

    def read(self, job_id: str, name: str) -> Iterator[bytes] | None:
        if not safe(job_id, name):
            return None
        path = self._folder(job_id) / name
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            return None
        return _chunks(handle)

    def remove(self, job_id: str) -> None:
        if safe(job_id):
            shutil.rmtree(self._folder(job_id), ignore_errors=True)

    def jobs(self) -> list[str]:
        try:
            return [entry.name for entry in self.root.iterdir() if entry.is_dir() and safe(entry.name)]
        except FileNotFoundError:
            return []


def _chunks(handle: IO[bytes]) -> Iterator[bytes]:
    with handle:
        while chunk := handle.read(CHUNK):
            yield chunk
