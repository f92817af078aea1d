"""Outputs: written whole or not at all, a killed writer's leftovers found and removed, OS errors as one line."""

from __future__ import annotations

import errno
import os
import subprocess
import sys

import pytest

from poet.console import _guarded, os_error_line
from poet.errors import OutputError
from poet.fileio import atomic_path, check_not_input, remove_stale_temporaries, unique_names


def dead_pid() -> int:
    """The id of a process that has ended."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_writers_temporaries_are_removed_and_a_live_ones_kept(tmp_path):
    target = tmp_path / "poses [1].json"
    stale = tmp_path / f".{target.name}.poet-tmp-{dead_pid()}-abc123.tmp.json"
    live = tmp_path / f".{target.name}.poet-tmp-{os.getppid()}-def456.tmp.json"
    other = tmp_path / f".other.json.poet-tmp-{dead_pid()}-ghi789.tmp.json"
    for path in (stale, live, other):
        path.write_text("partial")
    with atomic_path(target) as tmp:
        assert tmp.name.startswith(f".{target.name}.poet-tmp-{os.getpid()}-")
        tmp.write_text("whole")
    assert target.read_text() == "whole"
    assert not stale.exists() and not other.exists() and live.exists()
    again = tmp_path / f".{target.name}.poet-tmp-{dead_pid()}-jkl012.tmp.json"
    again.write_text("partial")
    assert remove_stale_temporaries(tmp_path) == [again]
    assert live.exists()


def test_a_failed_write_keeps_the_previous_file_and_names_the_target(tmp_path):
    target = tmp_path / "model.onnx"
    target.write_text("previous")
    no_space = pytest.raises(OutputError, match=r"cannot write .*model\.onnx: No space left on device")
    with no_space, atomic_path(target) as tmp:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))
    assert target.read_text() == "previous"
    assert [path.name for path in tmp_path.iterdir()] == ["model.onnx"]


def test_a_folder_in_the_way_is_one_line(tmp_path):
    (tmp_path / "out.json").mkdir()
    in_the_way = pytest.raises(OutputError, match=r"cannot write .*out\.json: Is a directory")
    with in_the_way, atomic_path(tmp_path / "out.json") as tmp:
        tmp.write_text("{}")
    assert list((tmp_path / "out.json").iterdir()) == []


def test_an_unexpected_os_error_reading_an_input_is_not_renamed(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "out.txt") as tmp:
        tmp.write_text((tmp_path / "missing-input.txt").read_text())


def test_the_boundary_prints_an_os_error_as_one_line(capsys):
    def full_disk() -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "/data/run/poses.jsonl")

    assert _guarded(full_disk, "poet-run", ()) == 2
    assert capsys.readouterr().err == "error: /data/run/poses.jsonl: No space left on device\n"
    assert (
        os_error_line(PermissionError(errno.EACCES, "Permission denied", "a", None, "b")) == "a -> b: Permission denied"
    )
    assert os_error_line(OSError("socket closed")) == "socket closed"


def test_an_output_that_is_an_input_is_refused_through_symlinks(tmp_path):
    source = tmp_path / "model.pth"
    source.write_bytes(b"weights")
    (tmp_path / "link.pth").symlink_to(source)
    with pytest.raises(OutputError, match=r"link\.pth: it is the input .*model\.pth; give another output path"):
        check_not_input(tmp_path / "link.pth", source)
    check_not_input(tmp_path / "other.pth", source, None)


def test_unique_names_keep_distinct_names_and_number_repeats():
    assert unique_names(["a/x.jpg", "b/x.jpg", "y.jpg", "y.png"]) == ["a/x.jpg", "b/x.jpg", "y.jpg", "y.png"]
    assert unique_names(["x_poses.png", "x_poses.png", "X_POSES.png"]) == [
        "x_poses.png",
        "x_poses-2.png",
        "X_POSES-3.png",
    ]
