"""The client's start options: KERNEL_LAUNCH_TIMEOUT and KERNEL_WORKING_DIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kernelyard.errors import InvalidRequest
from kernelyard.start_options import MAX_DEADLINE, dir_inside_home, launch_deadline


@pytest.mark.parametrize(("value", "seconds"), [("40", 40.0), ("12.5", 12.5), ("0.5", 0.5),
                                                ("999999999999", MAX_DEADLINE)])
def test_a_positive_number_of_seconds_is_a_deadline(value: str, seconds: float) -> None:
    assert launch_deadline({"KERNEL_LAUNCH_TIMEOUT": value}) == seconds


def test_no_launch_timeout_is_no_deadline() -> None:
    assert launch_deadline({}) is None


@pytest.mark.parametrize("value", ["0", "0.0", "-1", "+3", "1e3", "inf", "nan", "", " 3",
                                   "3 ", "3s", "٣", "1_000", "0x10", "1.", ".5"])
def test_anything_else_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest, match="KERNEL_LAUNCH_TIMEOUT"):
        launch_deadline({"KERNEL_LAUNCH_TIMEOUT": value})


def test_a_working_dir_must_resolve_inside_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "work").mkdir(parents=True)
    (home / "out").symlink_to(tmp_path)
    assert dir_inside_home(str(home / "work"), str(home)) == os.path.realpath(home / "work")
    assert dir_inside_home(str(home), str(home)) == os.path.realpath(home)
    for bad, why in [("work", "absolute"), (str(tmp_path), "outside"),
                     (str(home / "out"), "outside"), (str(home / "work" / ".." / ".."), "outside"),
                     (str(home / "missing"), "not a directory"),
                     (str(tmp_path / "home2"), "outside")]:
        with pytest.raises(InvalidRequest, match=why):
            dir_inside_home(bad, str(home))
