"""Stages die with their supervisor: each is a process group, signalled and killed whole, and the
lifeline (kiri/supervise/lifeline.py) ends them when the supervisor is killed outright."""

import os
import signal

import psutil
from test_supervisor import FAST, helper, supervise, wait_until

WRAPPED = ["sh", "-c", "sleep 1000; exit 125"]  # the documented wrapper of a finite source

__all__ = ["supervise"]  # the fixture, used by name


def family(pid: int) -> list[psutil.Process]:
    """A process and everything it started, once they are all there."""
    proc = psutil.Process(pid)
    return [proc, *proc.children(recursive=True)]


def gone(procs: list[psutil.Process]) -> bool:
    """Whether none of these is still running (a zombie has ended, it waits to be reaped)."""
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def wrapped_family(sv) -> list[psutil.Process]:
    """The wrapper's shell and its sleep, once both run."""
    pid = wait_until(lambda: sv.stage("wrapped").get("pid"), what="the wrapper")
    return wait_until(lambda: len(f := family(pid)) == 2 and f, what="the sleep")


def test_kill_9_of_the_supervisor_ends_every_stage_and_what_it_started(supervise):
    sv = supervise(
        [
            {"name": "wrapped", "argv": WRAPPED},
            {"name": "ticker", "argv": helper("tick", "0.5")},  # nobody reads it: no SIGPIPE
        ],
        **FAST,
    )
    ticker = psutil.Process(sv.wait_state("ticker", "running")["pid"])
    children = psutil.Process(sv.proc.pid).children()
    lifeline = [p for p in children if "kiri.supervise.lifeline" in p.cmdline()]
    assert len(lifeline) == 1
    procs = [*wrapped_family(sv), ticker, *lifeline]
    sv.proc.kill()
    sv.proc.wait()
    wait_until(lambda: gone(procs), timeout=10, what="the stages to end")


def test_a_clean_stop_leaves_nothing_of_a_wrapped_source_behind(supervise):
    sv = supervise([{"name": "wrapped", "argv": WRAPPED}], **FAST)
    procs = wrapped_family(sv)
    assert sv.stop() == 0
    wait_until(lambda: gone(procs), timeout=10, what="the wrapped program to end")
    assert sv.stage("wrapped")["state"] == "stopped"


def test_a_restarted_stage_never_runs_next_to_what_its_last_process_left(supervise):
    sv = supervise([{"name": "wrapped", "argv": WRAPPED}], **FAST)
    shell, sleep = wrapped_family(sv)
    os.kill(shell.pid, signal.SIGKILL)  # the wrapper dies; the program it ran would live on
    wait_until(lambda: sv.stage("wrapped").get("restarts") == 1, what="the restart")
    wait_until(lambda: gone([sleep]), timeout=10, what="the old program to end")
    assert sv.stop() == 0
