"""Where `deepfake serve` keeps its jobs: a durable state folder (`--state-dir`), or a temporary one that a later
start removes once its owner is gone.

    store = JobStore("/var/lib/deepfake")       # DIR/jobs.db (SQLite: the job table), DIR/jobs/<id>/ (the files)
    pool = JobPool(weights, config, store=store)  # loads the table: queued and running jobs run (again)
    ...
    store.close()                                # releases DIR for the next server

A state folder belongs to one server at a time: `JobStore` takes an exclusive `flock` on ``DIR/lock`` (the kernel
drops it when the process ends, SIGKILL included), so a second server on the same DIR refuses to start and a
restarted one needs no clean-up. The table is written through on every change of a job's state (queued, running,
done or failed, deleted) in SQLite's WAL mode: a server killed at any moment loses no accepted job. Progress within a
job is not written (a job that was running runs again from the start).

Temporary job folders (``$TMPDIR/deepfake-serve-*``, used without `--state-dir`) carry the same kind of lock on
``.owner``; `remove_abandoned_roots` deletes those whose owner is gone, so uploads of a killed server do not stay.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path

from data_prep.files import OneLineError

__all__ = ["JobStore", "StateError", "FolderLock", "SCHEMA_VERSION", "TEMP_PREFIX", "make_temp_root",
           "remove_abandoned_roots"]

log = logging.getLogger("deepfake.serve")

SCHEMA_VERSION = 1
TEMP_PREFIX = "deepfake-serve-"
OWNER_FILE = ".owner"
LEGACY_AGE_S = 86400.0  # a temporary folder without an owner file (made by an older version) older than this


class StateError(OneLineError):
    """A state folder that cannot be used (in use, not writable, another schema); one line."""


class FolderLock:
    """An exclusive, non-blocking `flock` on `path` holding the owner's PID; released by `release` or when the
    process ends (however it ends).

    Raises:
        BlockingIOError: another process holds it (`holder` reads its PID).
        OSError: the file cannot be created.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._fd)
            self._fd = None
            raise
        os.ftruncate(self._fd, 0)
        os.write(self._fd, f"{os.getpid()}\n".encode())

    @staticmethod
    def holder(path: str | os.PathLike) -> str:
        """The PID written in a lock file (``?`` when unreadable)."""
        try:
            return Path(path).read_text().strip() or "?"
        except OSError:
            return "?"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


# ------------------------------------------------------------------------------------------ temporary folders


def make_temp_root(prefix: str = TEMP_PREFIX) -> tuple[Path, FolderLock]:
    """A new ``$TMPDIR/<prefix>*`` folder (default ``deepfake-serve-*``) and the lock that marks it as this
    process's."""
    root = Path(tempfile.mkdtemp(prefix=prefix))
    return root, FolderLock(root / OWNER_FILE)


def remove_abandoned_roots(parent: str | os.PathLike | None = None, prefix: str = TEMP_PREFIX) -> list[Path]:
    """Delete the temporary folders `<prefix>*` (default: the servers' job folders) under `parent` (default: the
    temp folder) whose process is gone.

    A folder is abandoned when nobody holds the lock on its ``.owner`` file, or (made by a version without one)
    when it has no such file and is older than a day (made by a version without one, which may still be running).
    Returns the folders removed.
    """
    removed = []
    for folder in Path(parent or tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            if not folder.is_dir() or folder.is_symlink():
                continue
            owner = folder / OWNER_FILE
            if owner.is_file():
                try:
                    lock = FolderLock(owner)
                except BlockingIOError:
                    continue  # its server is running
                lock.release()
            elif time.time() - folder.stat().st_mtime < LEGACY_AGE_S:
                continue
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
        except OSError as err:  # not ours to remove (another user's), or gone meanwhile
            log.debug("left %s: %s", folder, err)
    if removed:
        log.info("removed %d temporary folder(s) left by processes that were killed: %s", len(removed),
                 ", ".join(str(p) for p in removed))
    return removed


# ------------------------------------------------------------------------------------------ the state folder


class JobStore:
    """The job table of a `--state-dir` (SQLite) and the folder of the jobs' files, owned by this process.

    Rows are the jobs' own fields as JSON (`deepfake.serve.jobs.Job.record`), in the order they were accepted.

    Raises:
        StateError: the folder can't be created or written, another server uses it, or its table has another
            schema version (or is not one of ours).
    """

    def __init__(self, folder: str | os.PathLike) -> None:
        self.folder = Path(folder)
        where = f"--state-dir {self.folder}"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            self.jobs_root.mkdir(exist_ok=True)
            probe = self.folder / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            raise StateError(f"can't use {where}: {err.strerror or err}") from None
        try:
            self._lock = FolderLock(self.folder / "lock")
        except BlockingIOError:
            raise StateError(f"{where} is in use by another deepfake serve (pid "
                             f"{FolderLock.holder(self.folder / 'lock')}); stop it or give another folder") from None
        except OSError as err:
            raise StateError(f"can't use {where}: {err.strerror or err}") from None
        try:
            self._db = self._open(self.folder / "jobs.db", where)
        except BaseException:
            self._lock.release()
            raise

    @property
    def jobs_root(self) -> Path:
        return self.folder / "jobs"

    @staticmethod
    def _open(path: Path, where: str) -> sqlite3.Connection:
        db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)  # autocommit: one write, one commit
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # durable against a killed process (not a power cut)
            db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif row[0] != str(SCHEMA_VERSION):
                raise StateError(f"{where} holds jobs of schema version {row[0]}; this deepfake reads version "
                                 f"{SCHEMA_VERSION}: use another folder (or the version that wrote it)")
            db.execute("CREATE TABLE IF NOT EXISTS jobs (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE "
                       "NOT NULL, state TEXT NOT NULL, data TEXT NOT NULL)")
        except sqlite3.Error as err:
            db.close()
            raise StateError(f"{where}: {path.name} is not a job table of deepfake serve ({err})") from None
        except BaseException:
            db.close()
            raise
        return db

    def load(self) -> list[dict]:
        """Every stored job's record, in the order they were accepted."""
        return [json.loads(data) for (data,) in self._db.execute("SELECT data FROM jobs ORDER BY seq")]

    def put(self, record: dict) -> None:
        """Insert or update one job's record (keeps its place in the order)."""
        self._db.execute("INSERT INTO jobs (id, state, data) VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                         "state = excluded.state, data = excluded.data",
                         (record["id"], record["state"], json.dumps(record)))

    def delete(self, job_id: str) -> None:
        self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    def close(self) -> None:
        """Close the table and give the folder up (another server may use it now)."""
        try:
            self._db.close()
        finally:
            self._lock.release()
