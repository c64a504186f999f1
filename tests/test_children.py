"""The one child-process runner (kiri/wire/children.py), on real commands."""

import os
import signal
import sys
import time

import pytest

from kiri.wire.children import (
    CannotRunError,
    ChildError,
    ExitError,
    Finished,
    NotFoundError,
    StoppedError,
    TimedOutError,
    run,
)


def gone(pid: int, within: float = 5.0) -> bool:
    """Whether the process ends (is missing, or a zombie waiting to be reaped) within `within`."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def started(pidfile, within: float = 5.0) -> int:
    deadline = time.monotonic() + within
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.01)
    return int(pidfile.read_text())


def test_a_run_gives_its_status_stdout_and_stderr_with_stdin_and_env_passed():
    code = "import os, sys; print(sys.stdin.read() + os.environ['KIRI_X']); sys.exit('note')"
    env = {"KIRI_X": "y"}
    done = run([sys.executable, "-c", code], timeout=10, input=b"line ", env=env, check=False)
    assert done == Finished(status=1, stdout=b"line y\n", stderr=b"note\n")


def test_input_larger_than_a_pipe_is_written_while_output_is_read():
    big = os.urandom(1 << 20)  # cat echoes as it reads: writing all first would deadlock
    assert run(["cat"], timeout=10, input=big, limit=2 << 20).stdout == big


def test_a_timeout_kills_the_whole_process_group(tmp_path):
    pidfile = tmp_path / "pid"
    begun = time.monotonic()
    with pytest.raises(TimedOutError, match=r"^timed out after 0\.5 s$"):
        run(["sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"], timeout=0.5)
    assert time.monotonic() - begun < 4
    assert gone(int(pidfile.read_text()))


def test_stopping_ends_the_run_and_kills_the_group(tmp_path):
    pidfile = tmp_path / "pid"
    begun = time.monotonic()
    with pytest.raises(StoppedError):
        run(
            ["sh", "-c", f"sleep 100 & echo $! > {pidfile}; wait"],
            timeout=30,
            stopping=lambda: started(pidfile) > 0,
        )
    assert time.monotonic() - begun < 10
    assert gone(int(pidfile.read_text()))


def test_a_child_left_behind_after_a_clean_exit_does_not_hold_the_run():
    begun = time.monotonic()
    done = run(["sh", "-c", "sleep 100 & echo $!"], timeout=30)
    left = int(done.stdout)
    try:
        assert time.monotonic() - begun < 10 and done.status == 0
    finally:
        os.kill(left, signal.SIGKILL)


def test_a_missing_program_is_not_found_and_names_it():
    with pytest.raises(NotFoundError, match=r"^cannot run kiri-no-such-program: \S"):
        run(["kiri-no-such-program"], timeout=10)


def test_a_program_that_cannot_be_executed_says_why(tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    with pytest.raises(CannotRunError, match=f"^cannot run {script}: Permission denied$") as e:
        run([str(script)], timeout=10)
    assert not isinstance(e.value, NotFoundError)


def test_a_failure_gives_its_status_and_the_last_line_of_stderr():
    code = "import sys; sys.stderr.write('x' * 100000 + '\\nstarting\\ndisk full\\n'); sys.exit(3)"
    with pytest.raises(ExitError, match=r"^exit status 3: disk full$") as e:
        run([sys.executable, "-c", code], timeout=10)
    assert e.value.finished.status == 3
    assert len(e.value.finished.stderr) <= 4096  # only the tail is kept


def test_a_failure_is_a_result_when_not_checked():
    done = run(["sh", "-c", "echo inactive; exit 3"], timeout=10, check=False)
    assert done == Finished(status=3, stdout=b"inactive\n", stderr=b"")
    assert done.reason() == "exit status 3"


def test_a_command_killed_by_a_signal_says_which():
    with pytest.raises(ExitError, match=r"^killed by SIGTERM$"):
        run(["sh", "-c", "kill -TERM $$"], timeout=10)


def test_output_beyond_the_limit_ends_the_run():
    begun = time.monotonic()
    with pytest.raises(ChildError, match=r"^printed more than 1000 bytes$"):
        run(["yes"], timeout=5, limit=1000)
    assert time.monotonic() - begun < 4  # ended by the limit, not by the timeout
    assert run(["printf", "%1000s"], timeout=10, limit=1000).stdout == b" " * 1000


def test_discarded_stdout_counts_against_no_limit():
    done = run(["head", "-c", "100000", "/dev/zero"], timeout=10, limit=10, keep_stdout=False)
    assert done == Finished(status=0, stdout=b"", stderr=b"")
