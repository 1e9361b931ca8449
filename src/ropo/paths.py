"""Output paths: where a command may write without losing what the user already has there."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from ropo.errors import RoPOError


class OutputPathError(RoPOError, ValueError):
    """An output path that would lose or overwrite something the user has; the message names it."""


class DiskFullError(RoPOError):
    """The disk filled up while writing; the message says what was kept."""


def is_local_path(path: str | Path) -> bool:
    """Whether ``path`` names a folder on disk rather than a hub id ('name' or 'org/name'): it
    exists, or it can only be local (absolute, ``./``, ``../``, ``~``, or more than one ``/``)."""
    text = str(path)
    return (Path(text).expanduser().exists() or text.startswith(("/", "./", "../", "~"))
            or text in (".", "..") or text.rstrip("/").count("/") > 1)


def output_path(path: str | Path | None, what: str) -> Path:
    """``path`` with ``~`` expanded, as an absolute path. An empty path is an error: it would
    silently mean the current folder (and, for a run, ``/checkpoints`` at the filesystem root)."""
    text = "" if path is None else str(path).strip()
    if not text:
        raise OutputPathError(f"{what} is empty: name the folder to write to (e.g. {what}=runs/my-run)")
    return Path(os.path.abspath(os.path.expanduser(text)))


def check_output_dir(
    path: Path,
    what: str,
    force: bool = False,
    inputs: Iterable[str | Path] = (),
    ours: Callable[[Path], bool] | None = None,
    ignored: Iterable[str] = (),
    file_ok: bool = False,
) -> None:
    """Refuse an output folder whose contents would be lost: one that holds (or is) an input,
    a file (unless ``file_ok`` and ``force``), or a non-empty folder that ``ours`` does not
    recognise as this command's own output (unless ``force``). Also checks it can be written."""
    resolved = path.resolve()
    for source in inputs:
        source = Path(source).expanduser().resolve()
        if resolved == source or resolved in source.parents:
            raise OutputPathError(
                f"{what} {path} holds the input {source}; writing there would delete it: choose another folder"
            )
    if path.is_symlink() or path.exists():
        if not path.is_dir():
            if not (file_ok and force):
                hint = ", or pass --force to replace it" if file_ok else ""
                raise OutputPathError(f"{what} {path} is a file, not a folder: choose another path{hint}")
        elif not force and not (ours is not None and ours(path)):
            ignored = set(ignored)
            entries = sorted(entry.name for entry in path.iterdir() if entry.name not in ignored)
            if entries:
                shown = ", ".join(entries[:5]) + (", ..." if len(entries) > 5 else "")
                raise OutputPathError(
                    f"{what} {path} is not empty ({shown}) and was not written by this command: "
                    "choose a new or empty folder, or pass --force to write into it anyway"
                )
    check_writable(path.parent if path.is_file() else path, what)  # a file is replaced from its folder


def check_writable(path: Path, what: str) -> None:
    """The nearest existing folder at or above ``path`` must be writable (a read-only disk, a
    folder of another user, or a file where a folder should be are named now, not mid-run)."""
    if path.exists() and not path.is_dir():
        raise OutputPathError(f"{what} {path} is a file, not a folder: choose another path")
    existing = path
    while not (existing.exists() or existing.is_symlink()):
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise OutputPathError(f"{what} {path}: {existing} is a file, so no folder can be made below it")
    try:  # a real write: permission bits say nothing for root, nor for /proc or a read-only mount
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        reason = error.strerror or "read-only or not yours"
        raise OutputPathError(f"{what} {path}: cannot write in {existing} ({reason}): choose another folder") from None


class FolderLock:
    """An exclusive lock on a folder for one process (``fcntl.flock`` on a lock file in it).

    The kernel releases it when the process ends however it ends, so a crashed run never
    blocks the next one; the file holds the owner's PID so that a refusal can name it.
    """

    def __init__(self, folder: Path, what: str, name: str = ".ropo.lock") -> None:
        self.folder, self.what, self.path = folder, what, folder / name
        self._fd: int | None = None
        self._made_folder = False

    def __enter__(self) -> FolderLock:
        import fcntl

        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputPathError(
                    f"{self.what} {self.folder} is in use by another process ({self._owner()}); "
                    "wait for it to finish, or choose another folder"
                ) from None
            try:  # the file may have been removed (and made anew) between our open and our lock
                if os.fstat(fd).st_ino == os.stat(self.path).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def _owner(self) -> str:
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"PID {pid}" if pid.isdigit() else "PID unknown"

    def __exit__(self, *exc_info: object) -> None:
        if self._fd is None:
            return
        self.path.unlink(missing_ok=True)
        os.close(self._fd)  # closing releases the lock
        self._fd = None
        if self._made_folder:
            try:
                self.folder.rmdir()  # only if nothing else was written: a refused run leaves no trace
            except OSError:
                pass
