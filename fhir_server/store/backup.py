"""A consistent copy of the SQLite database taken while servers keep serving and writing (``fhir-server backup``).

SQLite's online backup API copies the database page by page.  On its own, each step opens and closes its own read
transaction, and a commit by another process between two steps makes the copy start over (a busy server could
keep it from ever finishing).  Here the source connection holds ONE read transaction for the whole copy: in WAL
mode that is a fixed snapshot which writers do not block and cannot change, so every step reads the same database
state and the copy is exactly the database as it was when the backup began.  Checkpoints can only copy frames
into the main file up to that snapshot while it is held; the WAL grows meanwhile and shrinks again afterwards.

The copy is written to a temporary file beside the destination, switched to the rollback journal (a standalone
file, no ``-wal`` to carry along: the server turns WAL on again when it opens it), checked with
``PRAGMA integrity_check`` and only then renamed into place, so a failed or interrupted backup never leaves a
half-written file under the destination's name.
"""

from __future__ import annotations

import os
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine.url import make_url

from fhir_server.store.engine import normalise_url

STEP_PAGES = 1024  # 4 MiB at SQLite's default page size: a progress update every few milliseconds of copying
# Beside a database file, these belong to it: SQLite would replay a stale -wal or -journal into whatever file later
# sits at that path, so a backup never lands where one is left over.
COMPANIONS = ("-wal", "-journal")


class BackupError(Exception):
    """Why the backup was not made, in one line naming the path."""


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    size: int  # bytes
    resources: int  # current, not deleted
    deleted: int
    versions: int  # every stored version, deletions included
    revision: str  # the Alembic schema revision the copy is at


def backend_name(database_url: str) -> str:
    """``sqlite`` or ``postgresql`` (SQLAlchemy's name for the URL's database)."""
    return make_url(normalise_url(database_url)).get_backend_name()


def sqlite_file(database_url: str) -> Path:
    """The database file a ``sqlite:///...`` URL names (relative paths from the working directory, as the server
    opens them)."""
    database = make_url(database_url).database
    if not database or database == ":memory:" or database.startswith("file::memory:"):
        raise BackupError(f"{database_url} is an in-memory database: there is no file to back up")
    return Path(database)


def backup_sqlite(
    source: Path,
    dest: Path,
    *,
    force: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    step_pages: int = STEP_PAGES,
) -> BackupSummary:
    """Copy the database at ``source`` to ``dest`` (see the module's docstring); ``on_progress(pages done, total)``
    after each step.  Raises BackupError, leaving nothing behind, when anything stops it."""
    _check_destination(source, dest, force)
    temporary = _temporary_beside(dest)
    try:
        _copy(source, temporary, on_progress, step_pages)
        summary = _check_copy(temporary)
        _sync(temporary)
        _put_in_place(temporary, dest, force)
    except BaseException:
        for leftover in (temporary, *(Path(f"{temporary}{s}") for s in (*COMPANIONS, "-shm"))):
            leftover.unlink(missing_ok=True)
        raise
    return BackupSummary(dest, dest.stat().st_size, *summary)


def _check_destination(source: Path, dest: Path, force: bool) -> None:
    if not source.is_file():
        raise BackupError(f"{source}: no such database file (FHIR_SERVER_DATABASE_URL)")
    if not dest.parent.is_dir():
        raise BackupError(f"cannot write {dest}: the folder {dest.parent} does not exist")
    if dest.is_dir():
        raise BackupError(f"cannot write {dest}: it is a folder (give the backup's file name)")
    if dest.exists() and dest.samefile(source):
        raise BackupError(f"{dest} is the database itself: give another file")
    for suffix in COMPANIONS:
        if Path(f"{dest}{suffix}").exists():
            raise BackupError(f"{dest}{suffix} exists: {dest} looks like a database in use; choose another file")
    if dest.exists() and not force:
        raise BackupError(f"{dest} exists: not replaced (give --force to replace it)")


def _temporary_beside(dest: Path) -> Path:
    """A new, owner-only file in the destination's folder (the backup holds patients' records; beside it, the
    final rename stays on one filesystem and so is atomic)."""
    try:
        handle, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent)
    except OSError as exc:
        raise BackupError(f"cannot write in {dest.parent}: {exc.strerror}") from None
    os.close(handle)
    return Path(name)


def _copy(source: Path, temporary: Path, on_progress: Callable[[int, int], None] | None, step_pages: int) -> None:
    # mode=rw: a missing file is an error, never a new empty database; nothing is written to it.
    try:
        reader = sqlite3.connect(f"file:{quote(str(source.resolve()))}?mode=rw", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source}: {exc}") from None
    try:
        reader.execute("PRAGMA busy_timeout=10000")
        try:
            reader.execute("BEGIN")  # the snapshot every step reads (module docstring)
            reader.execute("SELECT version_num FROM alembic_version").fetchall()
        except sqlite3.Error as exc:
            raise BackupError(f"{source} is not a fhir-server database ({exc})") from None
        writer = sqlite3.connect(temporary, isolation_level=None)
        try:

            def progress(_status: int, remaining: int, total: int) -> None:
                if on_progress is not None:
                    on_progress(total - remaining, total)

            reader.backup(writer, pages=step_pages, progress=progress)
            # The pages carry the source's WAL mode; the copy is a single file until a server opens it.
            writer.execute("PRAGMA journal_mode=DELETE").fetchall()
        except sqlite3.Error as exc:
            raise BackupError(f"copying {source} failed: {exc}") from None
        finally:
            writer.close()
    finally:
        reader.close()  # ends the read transaction


def _check_copy(temporary: Path) -> tuple[int, int, int, str]:
    """The copy's integrity, then what it holds: (resources, deleted, versions, schema revision)."""
    copy = sqlite3.connect(f"file:{quote(str(temporary.resolve()))}?mode=ro", uri=True)
    try:
        problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise BackupError(f"the copy failed its integrity check ({problems[0]}); nothing was written")
        resources, deleted = copy.execute(
            "SELECT COALESCE(SUM(NOT deleted), 0), COALESCE(SUM(deleted), 0) FROM resources"
        ).fetchone()
        (versions,) = copy.execute("SELECT COUNT(*) FROM resource_versions").fetchone()
        revision = ", ".join(row[0] for row in copy.execute("SELECT version_num FROM alembic_version"))
    except sqlite3.Error as exc:
        raise BackupError(f"the copy could not be checked: {exc}") from None
    finally:
        copy.close()
    return int(resources), int(deleted), int(versions), revision


def _sync(path: Path) -> None:
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def _put_in_place(temporary: Path, dest: Path, force: bool) -> None:
    """Rename the checked copy to ``dest``.  Without --force a hard link does it, which fails rather than replace a
    file that appeared meanwhile; with it, an atomic replace."""
    try:
        if force:
            os.replace(temporary, dest)
        else:
            try:
                os.link(temporary, dest)
            except FileExistsError:
                raise BackupError(f"{dest} exists: not replaced (give --force to replace it)") from None
            except OSError:  # a filesystem without hard links: checked just above, a narrow race remains
                if dest.exists():
                    raise BackupError(f"{dest} exists: not replaced (give --force to replace it)") from None
                os.replace(temporary, dest)
            temporary.unlink(missing_ok=True)
    except OSError as exc:
        raise BackupError(f"cannot write {dest}: {exc.strerror}") from None
    folder = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # the rename itself survives a power loss
    except OSError:
        pass  # some filesystems cannot sync a folder; the file's own data is synced already
    finally:
        os.close(folder)
