"""Output files: checked writable before long work, written atomically (complete or not at all), hashed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from poet.errors import OutputError

# mkstemp makes files owner-only; outputs get what a plain open() would give: 0666 less the umask (read once,
# at import, because reading it means setting it and threads may be creating files meanwhile).
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


# Free space below this after a write that came back short reads as a full disk.
_FULL_DISK_BYTES = 1 << 20

# Temporary files are named ``.<target name>.poet-tmp-<pid>-<random>.tmp<suffix>``: hidden, next to the file they
# become, and carrying the writer's process id so a later write can tell a killed run's leftovers from a live one's.
_TMP_MARK = ".poet-tmp-"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temporaries(folder: Path) -> list[Path]:
    """Delete the temporary files killed writers left in ``folder`` (their process is gone); returns them."""
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            mark = entry.name.rfind(_TMP_MARK)
            if not entry.name.startswith(".") or mark < 0:
                continue
            pid_text = entry.name[mark + len(_TMP_MARK) :].split("-", 1)[0]
            if pid_text.isdigit() and int(pid_text) != os.getpid() and not _pid_alive(int(pid_text)):
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


# Folders this process has swept for a killed writer's leftovers: once each, so writing thousands of files into
# one folder (poet-run --save-images) does not list it thousands of times.
_SWEPT: set[str] = set()


@contextlib.contextmanager
def atomic_path(path: str | Path, *, keep_empty: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The temp file lives in the same folder so the final ``os.replace`` is atomic on POSIX, and an
    interrupted or failed write leaves any previous file at ``path`` untouched. Leftovers of killed earlier
    writers in the folder are removed first (once per folder and process). An OSError while writing (a full
    disk, a read-only folder) becomes an :class:`OutputError` naming ``path``, not the temporary file.
    ``keep_empty=False``: a temporary file still empty at the end (a video that got no frame) replaces nothing.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        folder = os.path.realpath(target.parent)
        if folder not in _SWEPT:
            _SWEPT.add(folder)
            remove_stale_temporaries(target.parent)
        prefix = f".{target.name}{_TMP_MARK}{os.getpid()}-"
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp" + target.suffix, dir=target.parent)
    except OSError as error:
        raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        tmp.chmod(_FILE_MODE)
        try:
            yield tmp
        except OSError as error:
            if error.filename not in (None, tmp_name, str(tmp)):
                raise
            raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
        try:
            with open(tmp, "rb") as handle:
                if not keep_empty and os.fstat(handle.fileno()).st_size == 0:
                    return
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except OSError as error:
            raise OutputError(f"cannot write {target}: {error.strerror or error}") from None
    finally:
        tmp.unlink(missing_ok=True)


def write_failed(target: Path, folder: Path, problem: str) -> OutputError:
    """The error for a write whose library reports no errno (OpenCV's video writer, torch.save's stream writer).

    Names ``target`` and what went wrong; a full disk (``folder``'s, seen while the temporary file still holds
    its space) is said first, being the likeliest cause, and whether an earlier file at ``target`` survives.
    """
    if shutil.disk_usage(folder).free < _FULL_DISK_BYTES:
        problem = f"no space left on device: {problem}"
    kept = "the earlier file is kept" if target.exists() else "nothing was written"
    return OutputError(f"cannot write {target}: {problem}; {kept}")


def write_json(path: str | Path, data: Any, indent: int | None = None) -> None:
    """Write JSON atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=indent))


def check_writable(path: str | Path) -> None:
    """Fail before minutes of work when ``path`` cannot be written; create no folder yet.

    Folders are made when the file is written, so a failed run leaves no empty output folder behind. The
    nearest existing folder is probed with a temporary file, which also catches read-only disks.
    """
    target = Path(path)
    if target.is_dir():
        raise OutputError(f"cannot write {target}: it is a folder; give a file name")
    folder = next((folder for folder in target.parents if folder.exists()), Path("."))
    if not folder.is_dir():
        raise OutputError(f"cannot write {target}: {folder} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise OutputError(f"cannot write {target}: {folder} is not writable ({error.strerror or error})") from None


def check_not_input(output: str | Path, *inputs: str | Path | None) -> None:
    """Refuse an output path that is one of the inputs (symlinks and relative paths resolved): never overwrite input."""
    _refuse_inputs([Path(output)], [source for source in inputs if source is not None])


def check_outputs(outputs: Sequence[Path], inputs: Sequence[Path] = ()) -> None:
    """:func:`check_writable` and :func:`check_not_input` for many outputs: a probe per folder, inputs resolved once."""
    probed: set[Path] = set()
    for output in outputs:
        if output.parent not in probed:
            check_writable(output)
            probed.add(output.parent)
        elif output.is_dir():
            raise OutputError(f"cannot write {output}: it is a folder; give a file name")
    _refuse_inputs(outputs, inputs)


def _refuse_inputs(outputs: Sequence[Path], inputs: Sequence[str | Path]) -> None:
    resolved = {Path(source).resolve(): source for source in inputs if Path(source).exists()}
    for output in outputs:
        source = resolved.get(Path(output).resolve())
        if source is not None:
            raise OutputError(f"cannot write {output}: it is the input {source}; give another output path")


def unique_names(files: Sequence[str]) -> list[str]:
    """Output names for input names, distinct even on a case-insensitive disk (``Y.jpg`` and ``y.jpg``).

    Names already distinct ignoring case are kept; a later name equal to an earlier one but for case gets
    ``-2`` (``-3``...) before its suffix, never the name of another input.
    """
    reserved = {name.casefold() for name in files}
    used: set[str] = set()
    names = []
    for name in files:
        chosen = name
        if chosen.casefold() in used:
            path = PurePosixPath(name)
            number = 2
            while (chosen := str(path.with_stem(f"{path.stem}-{number}"))).casefold() in used | reserved:
                number += 1
        used.add(chosen.casefold())
        names.append(chosen)
    return names


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes, read in blocks (checkpoints and engines are hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
