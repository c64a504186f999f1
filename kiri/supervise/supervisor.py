"""kiri-supervise: run a pipeline file's stages, hold their pipes, restart them, stop them in order.

    kiri-supervise [PIPELINE]          # default: pipelines/pulse.toml of this checkout
    kiri-supervise --check PIPELINE    # check the file and print its stages

The pipeline file (kiri/supervise/pipeline.py) is checked completely before anything starts; a bad
one exits with status 2 and a line per problem.

Pipes. The supervisor owns every pipe: it reads each stage's stdout and writes its whole lines
into the stdin of every stage that lists it in `inputs` (kiri/supervise/relay.py), so a restarted
stage reattaches to its neighbours and fan-in never interleaves records. A stage nobody reads has
its stdout discarded, unless it has `output = "fifo"`: then its lines go into
$KIRI_HOME/feedback.fifo (mode 0600), which the supervisor holds open for writing all along. Each
stage's stderr goes to $KIRI_HOME/logs/STAGE.log, rotated by size.

Restarts. As under s6, a stage that exits is restarted, whatever its exit status, unless it
exits with 125, "do not restart me": then it is `stopped`, without an alert. (A finite source,
such as a replay, ends with `sh -c '…; exit 125'`.) The restart waits `restart.delay` seconds
(1), doubling after each death up to `restart.max_delay` (60), back to the start once the stage
has stayed up `restart.healthy` seconds (60). A stage that dies `restart.fail_deaths` times (5)
within `restart.fail_window` seconds (60) is `failed`: it is not restarted, an error is logged,
and an alert decision goes into the stdin of the `alerts` stage, with the last lines the stage
wrote on stderr. The rest keeps running, its
pipes open; lines for a stage that will not run again are dropped, and counted in the log
(`lines_dropped`) and the status. If every stage ends up stopped or failed, the supervisor
exits: 1 if one failed.

Process groups. Each stage runs in its own process group, and a stage is its whole group: when
its process ends, whatever it left in the group is killed, so the program behind an
`sh -c '…'` never outlives its stage, nor runs twice after a restart. A lifeline process
(kiri/supervise/lifeline.py) ends every stage's group if the supervisor dies, even of kill -9.

Notices. A stage that logs an event with `notify` (a summary) and `detail` (kiri.wire.log's
Log.notify: a training that failed, a source that gave up) asks for the person to be told: the
supervisor writes an alert decision with them into the alerts stage's stdin too, so it reaches
the same sinks as any alert. The same notice from the same stage, but for its figures, is sent
once in NOTICE_QUIET seconds (an hour); the repeats are only logged.

Stopping. On SIGTERM, SIGINT or SIGHUP the process groups of the stages with no inputs get
SIGTERM; every other stage gets the end of its stdin once all its producers have exited and
their output has been written into it, so it finishes what is in flight and exits. A stage
waiting to be restarted is started at once if lines are queued for it or may still come, so
they drain too. The FIFO writer is closed last. Whatever is still running `stop_timeout`
seconds (10) after the signal, or at a second signal (one more than a second later: signals
that come together are one request), is killed with SIGKILL (with its process group). Then the
supervisor exits 0.

Status. $KIRI_HOME/status.json is rewritten atomically every second and on every change of
state; `kiri status` shows it. A lock on $KIRI_HOME/supervise.lock keeps a second supervisor
from running with the same KIRI_HOME.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import re
import select
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import FrameType

import msgspec
import psutil

from kiri import add_version_option, complete
from kiri.home.config import secret_names
from kiri.home.paths import atomic_write, kiri_home, private_dir
from kiri.home.runner import run_main
from kiri.home.status import AtomStatus, StageStatus, Status, status_path
from kiri.supervise.pipeline import (
    DEFAULT_PIPELINE,
    Pipeline,
    PipelineError,
    StageSpec,
    load,
    stage_argv,
    uses_fifo,
)
from kiri.supervise.relay import READ_SIZE, Inbox, Outlet, RotatingLog
from kiri.supervise.status import Usage, table
from kiri.wire.backoff import Backoff
from kiri.wire.errors import DO_NOT_RESTART, KiriError
from kiri.wire.log import TAIL_LINES, Log, tail
from kiri.wire.records import Decision, Score
from kiri.wire.redact import redact
from kiri.wire.stream import setup_logging

EXEC_FAILED = 127  # the status a stage gets when its command cannot be run
SAME_REQUEST = 1.0  # seconds within which a second signal repeats the first
STARTING = 1.0  # a stage counts as running once it has stayed up this long
STATUS_EVERY = 1.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SCORE_MARK = b'"kind":"score"'
NOTICE_MARK = b'"notify":'
NOTICE_QUIET = 3600.0  # seconds in which the same notice of a stage is sent once
MAX_PARTIAL = 1 << 16  # bytes of an unfinished stderr line kept for the ring
SUMMARY_WIDTH = 200  # characters of a stage's last line quoted in a summary


class Stage:
    """One stage of the pipeline: its pipes, its current process, and its record so far."""

    def __init__(
        self, spec: StageSpec, argv: list[str], stderr_log: RotatingLog, restart: Backoff
    ) -> None:
        self.spec, self.name, self.argv, self.stderr_log = spec, spec.name, argv, stderr_log
        self.inbox: Inbox | None = None  # its stdin, when something writes into it
        self.producers: list[Stage] = []
        self.consumers: list[Inbox] = []  # where its stdout goes
        self.proc: subprocess.Popen[bytes] | None = None
        self.outlet: Outlet | None = None
        self.err_fd: int | None = None
        self.log_error = ""
        self.state = "starting"
        self.restarts = self.dropped = 0
        self.started: float | None = None  # wall clock, for people
        self.up_since = 0.0  # monotonic, for the backoff
        self.exit_status: int | None = None
        self.deaths: deque[float] = deque()
        self.restart = restart  # the wait before each restart
        self.restart_at = 0.0
        self.recent: deque[str] = deque(maxlen=TAIL_LINES)  # its last lines on stderr
        self.partial = b""  # the start of a stderr line still being written

    @property
    def ended(self) -> bool:
        return self.state in ("stopped", "failed")

    def status(self, usage: dict[int, tuple[float, int]]) -> StageStatus:
        pid = self.proc.pid if self.proc else None
        cpu, rss = usage.get(pid, (None, None)) if pid else (None, None)
        return StageStatus(
            name=self.name,
            state=self.state,
            pid=pid,
            restarts=self.restarts,
            started=self.started,
            exit_status=self.exit_status,
            dropped=self.dropped,
            cpu=cpu,
            rss=rss,
        )


class Supervisor:
    """Runs one checked pipeline: starts its stages, relays their pipes, restarts them when
    they die and stops them in order."""

    def __init__(self, pipeline: Pipeline, path: Path, log: Log) -> None:
        self.pipeline, self.path, self.log = pipeline, path, log
        home = kiri_home()
        self.fifo_path = home / "feedback.fifo"
        self.status_file = status_path()
        self.usage = Usage()
        self.fifo = Inbox(bounded=False)
        logs = private_dir(home / "logs")
        self.stages = {
            spec.name: Stage(
                spec,
                stage_argv(spec, self.fifo_path),
                RotatingLog(logs / f"{spec.name}.log", pipeline.logs.max_bytes, pipeline.logs.keep),
                Backoff(pipeline.restart.delay, pipeline.restart.max_delay),
            )
            for spec in pipeline.stages
        }
        self._connect()
        self.lifeline: Lifeline | None = None
        self.stop_at: float | None = None  # monotonic deadline for SIGKILL, once stopping
        self.stop_asked = 0.0  # when the signal that began the stop came (monotonic)
        self.killed = False
        self.signals: list[int] = []
        self.wake_fd = -1
        self.atoms: dict[str, AtomStatus] = {}
        self.changed = True
        self.status_due = 0.0
        self.started = psutil.Process().create_time()
        self.host = socket.gethostname()
        self.score = msgspec.json.Decoder(Score)
        self.noticed: dict[tuple[str, str], float] = {}  # (stage, notice but its figures): when
        self.secrets = [os.environ[name] for name in secret_names(os.environ)]

    def _connect(self) -> None:
        for stage in self.stages.values():
            inbox = Inbox() if stage.spec.inputs or stage.name == self.pipeline.alerts else None
            stage.inbox = inbox
            stage.producers = [self.stages[name] for name in stage.spec.inputs]
            for producer in stage.producers:  # a stage with inputs has an inbox
                assert inbox is not None
                producer.consumers.append(inbox)
            if stage.spec.output == "fifo":
                stage.consumers.append(self.fifo)
        self.inboxes = [s.inbox for s in self.stages.values() if s.inbox] + [self.fifo]

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> None:
        with self._signals(), Lifeline(self.pipeline.stop_timeout, self.log) as lifeline:
            self.lifeline = lifeline
            self._open_fifo()
            self.log.info(
                "supervisor_start",
                pipeline=self.pipeline.name,
                file=str(self.path),
                stages=list(self.stages),
            )
            for stage in self.stages.values():
                self._start(stage)
            while not all(s.ended for s in self.stages.values()):
                self._step()
            self._finish()
        failed = [s.name for s in self.stages.values() if s.state == "failed"]
        if failed and self.stop_at is None:
            raise KiriError(f"every stage has ended, and these failed: {', '.join(failed)}")

    def _step(self) -> None:
        handlers = self._interest()
        poller = select.poll()
        for fd, (mask, _) in handlers.items():
            poller.register(fd, mask)
        for fd, _event in poller.poll(self._timeout() * 1000):
            handlers[fd][1]()
        self._take_signals()
        self._reap()
        now = time.monotonic()
        self._restart_due(now)
        self._promote(now)
        self._close_finished_inboxes()
        self._kill_overdue(now)
        self._write_status(now)

    def _interest(self) -> dict[int, tuple[int, Callable[[], object]]]:
        """What to wait for: readable outputs whose consumers have room, queued inputs."""
        fds: dict[int, tuple[int, Callable[[], object]]] = {
            self.wake_fd: (select.POLLIN, self._drain_wakeups)
        }
        for stage in self.stages.values():
            if stage.outlet and not any(inbox.full for inbox in stage.consumers):
                fds[stage.outlet.fd] = (select.POLLIN, partial(self._read_stdout, stage))
            if stage.err_fd is not None:
                fds[stage.err_fd] = (select.POLLIN, partial(self._read_stderr, stage))
        for inbox in self.inboxes:
            if inbox.fd is not None and inbox.queued:
                fds[inbox.fd] = (select.POLLOUT, inbox.write)
        return fds

    def _timeout(self) -> float:
        now = time.monotonic()
        deadlines = [self.status_due]
        for stage in self.stages.values():
            if stage.state == "backoff":
                deadlines.append(stage.restart_at)
            elif stage.state == "starting":
                deadlines.append(stage.up_since + STARTING)
        if self.stop_at is not None and not self.killed:
            deadlines.append(self.stop_at)
        return max(0.0, min(deadlines) - now)

    # -- relaying ----------------------------------------------------------------------------

    def _read_stdout(self, stage: Stage) -> bool:
        """Relay one read of the stage's stdout; False when nothing was there."""
        assert stage.outlet is not None
        lines = stage.outlet.read()
        if lines:
            for inbox in stage.consumers:
                if dropped := inbox.put(lines):  # the FIFO's when full, or a stage's that ended
                    self._dropped(stage, dropped, inbox.drop_reason)
            self._sample(lines)
        if stage.outlet.at_eof:
            self._close_outlet(stage)
        return lines is not None

    def _sample(self, lines: bytes) -> None:
        """Keep the latest score per atom for the status file: only a chunk's last line."""
        last = lines[lines.rfind(b"\n", 0, len(lines) - 1) + 1 : -1]
        if SCORE_MARK in last:
            try:
                score = self.score.decode(last)
            except (msgspec.DecodeError, RecursionError):  # the stage itself reports the line
                return
            self.atoms[score.atom] = AtomStatus(
                score.surprise, score.threshold, score.ts, score.host
            )

    def _close_outlet(self, stage: Stage) -> None:
        assert stage.outlet is not None
        if dropped := stage.outlet.close():
            self._dropped(stage, dropped, "a line left unfinished at exit, or over 16 MiB")
        stage.outlet = None

    def _dropped(self, stage: Stage, count: int, reason: str) -> None:
        stage.dropped += count
        self.log.warning("lines_dropped", name=stage.name, count=count, reason=reason)

    def _read_stderr(self, stage: Stage) -> bool:
        """Copy one read of the stage's stderr into its log; False when nothing was there."""
        assert stage.err_fd is not None
        try:
            chunk = os.read(stage.err_fd, READ_SIZE)
        except BlockingIOError:
            return False
        if not chunk:
            os.close(stage.err_fd)
            stage.err_fd = None
            if stage.partial:  # its last line, unfinished
                self._stderr_lines(stage, b"\n")
            return False
        try:
            stage.stderr_log.write(chunk)
            stage.log_error = ""
        except OSError as e:
            if str(e) != stage.log_error:  # once per kind of trouble, not once per chunk
                self.log.warning("stage_log_failed", name=stage.name, error=str(e))
            stage.log_error = str(e)
        self._stderr_lines(stage, chunk)
        return True

    def _stderr_lines(self, stage: Stage, chunk: bytes) -> None:
        """Keep the stage's last lines of stderr, and pass on the notices among them."""
        lines = (stage.partial + chunk).split(b"\n")
        stage.partial = lines.pop()[:MAX_PARTIAL]
        for line in lines:
            text = redact(line.decode("utf-8", "replace").rstrip(), self.secrets)
            if text.strip():
                stage.recent.append(tail(text))  # cut to a notice's width
            if NOTICE_MARK in line:
                self._notice(stage, line)

    def _notice(self, stage: Stage, line: bytes) -> None:
        """An event the stage logged for the person (kiri.wire.log's Log.notify): an alert."""
        try:
            event = msgspec.json.decode(line)
        except (msgspec.DecodeError, RecursionError):
            return  # not a log event: a line that happens to hold the word
        if not isinstance(event, dict) or not isinstance(event.get("notify"), str):
            return
        detail = event.get("detail")
        summary = redact(f"{stage.name}: {event['notify']}", self.secrets)
        detail = redact(tail(detail), self.secrets) if isinstance(detail, str) else ""
        key = (stage.name, re.sub(r"\d+", "N", summary))
        now = time.monotonic()
        if now - self.noticed.get(key, -NOTICE_QUIET) < NOTICE_QUIET:
            self.log.info("stage_notice_repeated", name=stage.name, summary=summary)
            return
        self.noticed[key] = now
        alerted = self._alert(summary, detail, "warning")
        self.log.warning("stage_notice", name=stage.name, summary=summary, alerted=alerted)

    def _drain(self, stage: Stage) -> None:
        """Take everything a stage that exited left in its pipes, then close them."""
        while stage.outlet and self._read_stdout(stage):
            pass
        if stage.outlet:
            self._close_outlet(stage)
        while stage.err_fd is not None and self._read_stderr(stage):
            pass
        if stage.err_fd is not None:
            os.close(stage.err_fd)
            stage.err_fd = None

    def _close_finished_inboxes(self) -> None:
        """While stopping, end a stage's input once its producers have all exited and what they
        wrote has gone in, so it finishes what it holds and exits."""
        if self.stop_at is None:
            return  # until then a stage's stdin stays open, even while its producers are down
        for stage in self.stages.values():
            inbox = stage.inbox
            if (
                inbox
                and inbox.fd is not None
                and not inbox.queued
                and all(p.ended for p in stage.producers)
            ):
                inbox.detach()

    # -- starting, exits and restarts --------------------------------------------------------

    def _start(self, stage: Stage) -> None:
        stage.state, stage.up_since, stage.started = "starting", time.monotonic(), time.time()
        self.changed = True
        stdin, stdout, child_fds = subprocess.DEVNULL, subprocess.DEVNULL, []
        if stage.inbox:
            stdin, ours = os.pipe()
            os.set_blocking(ours, False)
            if stage.inbox.attach(ours):
                self._dropped(stage, 1, "the rest of a line its last process had started reading")
            child_fds.append(stdin)
        if stage.consumers:
            ours, stdout = os.pipe()
            os.set_blocking(ours, False)
            stage.outlet = Outlet(ours)
            child_fds.append(stdout)
        stage.err_fd, stderr = os.pipe()
        os.set_blocking(stage.err_fd, False)
        child_fds.append(stderr)
        try:
            # Its own process group: a Ctrl-C on the terminal reaches the supervisor only, which
            # then stops the stages in order, and it signals the stage's group as a whole. The
            # same session: the terminal sink can still write alerts to the person's terminal.
            stage.proc = subprocess.Popen(
                stage.argv, stdin=stdin, stdout=stdout, stderr=stderr, process_group=0
            )
        except OSError as e:
            self.log.error("stage_exec_failed", name=stage.name, argv0=stage.argv[0], error=str(e))
        finally:
            for fd in child_fds:
                os.close(fd)
        if stage.proc is None:
            self._ended(stage, EXEC_FAILED)
        else:
            self._lifeline(f"+{stage.proc.pid}")
            self.log.info(
                "stage_started", name=stage.name, pid=stage.proc.pid, restarts=stage.restarts
            )

    def _reap(self) -> None:
        for stage in self.stages.values():
            if stage.proc is not None and (status := stage.proc.poll()) is not None:
                self._ended(stage, status)

    def _promote(self, now: float) -> None:
        """A stage that has stayed up a moment is running (supervisord's startsecs)."""
        for stage in self.stages.values():
            if stage.state == "starting" and stage.proc and now - stage.up_since >= STARTING:
                stage.state = "running"
                self.changed = True

    def _ended(self, stage: Stage, status: int) -> None:
        self._drain(stage)
        if stage.proc is not None:
            self._end_group(stage.proc.pid)
        stage.proc = None
        stage.exit_status = status
        if stage.inbox:
            stage.inbox.detach()
        uptime = time.monotonic() - stage.up_since
        self.changed = True
        if self.stop_at is not None:
            self.log.info("stage_stopped", name=stage.name, exit_status=status)
            self._settle(stage, "stopped")
        elif status == DO_NOT_RESTART:
            self.log.info(
                "stage_stopped",
                name=stage.name,
                exit_status=status,
                reason="asked not to be restarted",
            )
            self._settle(stage, "stopped")
        else:
            self._died(stage, status, uptime)

    def _end_group(self, pgid: int) -> None:
        """Kill what a stage's process left in its process group: nothing of a stage outlives
        it (the program behind `sh -c '…'`, a background child), so a restart never runs two."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)
        self._lifeline(f"-{pgid}")

    def _lifeline(self, message: str) -> None:
        assert self.lifeline is not None
        self.lifeline.tell(message)

    def _died(self, stage: Stage, status: int, uptime: float) -> None:
        restart = self.pipeline.restart
        now = time.monotonic()
        stage.deaths.append(now)
        while stage.deaths[0] < now - restart.fail_window:
            stage.deaths.popleft()
        if len(stage.deaths) >= restart.fail_deaths:
            self._fail(stage, status)
            return
        if uptime >= restart.healthy:
            stage.restart.succeeded()
        wait = stage.restart.failed(f"exit status {status}")
        stage.state, stage.restart_at = "backoff", now + wait
        self.log.warning(
            "stage_died",
            name=stage.name,
            exit_status=status,
            uptime=round(uptime, 3),
            restart_in=wait,
        )

    def _fail(self, stage: Stage, status: int) -> None:
        deaths, seconds = len(stage.deaths), stage.deaths[-1] - stage.deaths[0]
        self._settle(stage, "failed")
        summary = (
            f"stage {stage.name} failed: died {deaths} times in {seconds:.3g} s "
            f"(last exit status {status}); not restarting it"
        )
        if stage.recent:
            summary += f". It said last: {tail(stage.recent[-1], width=SUMMARY_WIDTH)}"
        self.log.error(
            "stage_failed",
            name=stage.name,
            deaths=deaths,
            seconds=round(seconds, 3),
            exit_status=status,
            alerted=self._alert(summary, "\n".join(stage.recent)),
        )

    def _alert(self, summary: str, detail: str = "", severity: str = "critical") -> bool:
        """Write an alert decision into the alerts stage's stdin; False if none can take it.
        `detail` holds the error output behind it."""
        target = self.stages.get(self.pipeline.alerts)
        if target is None or target.ended or target.inbox is None:
            return False
        decision = Decision(
            ts=time.time(),
            id=f"sup{os.urandom(4).hex()}",
            atom="supervisor",
            host=self.host,
            action="alert",
            severity=severity,
            summary=summary,
            detail=detail,
        )
        target.inbox.put(msgspec.json.encode(decision) + b"\n")
        return True

    def _settle(self, stage: Stage, state: str) -> None:
        """A stage that will not run again: its input is dropped from now on, and counted."""
        stage.state = state
        if stage.inbox:
            reason = f"stage {stage.name} is {state} and will not run again"
            if dropped := stage.inbox.discard(reason):
                self._dropped(stage, dropped, f"queued for it when {reason}")
        self.changed = True

    def _restart_due(self, now: float) -> None:
        for stage in self.stages.values():
            if stage.state == "backoff" and now >= stage.restart_at:
                stage.restarts += 1
                self._start(stage)

    # -- stopping ----------------------------------------------------------------------------

    def _take_signals(self) -> None:
        # Signals within a second of each other are one request (`timeout` sends SIGTERM to
        # the supervisor and then to its process group): one later says "stop waiting".
        if not self.signals:
            return
        now = time.monotonic()
        if self.stop_at is None:
            self._begin_stop(signal.Signals(self.signals[0]).name)
            self.stop_asked = now
        elif now - self.stop_asked >= SAME_REQUEST:  # asked again: stop waiting
            self.stop_at = now
        self.signals.clear()

    def _begin_stop(self, reason: str) -> None:
        timeout = self.pipeline.stop_timeout
        self.stop_at = time.monotonic() + timeout
        self.log.info("stopping", signal=reason, timeout=timeout)
        for stage in self.stages.values():
            if stage.state == "backoff" and self._has_input(stage):
                self._start_to_drain(stage)
            elif stage.state == "backoff":
                self._settle(stage, "stopped")
            elif stage.proc is not None:
                stage.state = "stopping"
                if not stage.spec.inputs:  # sources first; the rest drain and see EOF
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(stage.proc.pid, signal.SIGTERM)  # a wrapper's program too
        self.changed = True

    def _has_input(self, stage: Stage) -> bool:
        """Whether lines wait for the stage, or may still come."""
        if stage.inbox is None:
            return False
        return bool(stage.inbox.queued) or not all(p.ended for p in stage.producers)

    def _start_to_drain(self, stage: Stage) -> None:
        """Start a stage that was waiting to be restarted, now: what is queued for it, and what
        its producers still write, drains into it before it sees the end of its input."""
        stage.restarts += 1
        self._start(stage)
        if stage.proc is not None:
            stage.state = "stopping"

    def _kill_overdue(self, now: float) -> None:
        if self.stop_at is None or self.killed or now < self.stop_at:
            return
        self.killed = True
        for stage in self.stages.values():
            if stage.proc is not None:
                self.log.warning("stage_killed", name=stage.name, pid=stage.proc.pid)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(stage.proc.pid, signal.SIGKILL)

    def _finish(self) -> None:
        self.fifo.detach()  # last: the loop through the FIFO ends here
        for stage in self.stages.values():
            stage.stderr_log.close()
        self.changed = True
        self._write_status(time.monotonic())
        self.log.info("supervisor_done", states={s.name: s.state for s in self.stages.values()})

    # -- surroundings ------------------------------------------------------------------------

    def _write_status(self, now: float) -> None:
        if not self.changed and now < self.status_due:
            return
        running = [s.proc.pid for s in self.stages.values() if s.proc and s.proc.returncode is None]
        usage = self.usage.of(running, now)
        status = Status(
            pid=os.getpid(),
            pipeline=self.pipeline.name,
            file=str(self.path),
            started=self.started,
            updated=time.time(),
            stages=[s.status(usage) for s in self.stages.values()],
            atoms=self.atoms,
        )
        try:
            atomic_write(self.status_file, msgspec.json.encode(status))
        except OSError as e:
            self.log.warning("status_write_failed", error=str(e))
        self.changed, self.status_due = False, now + STATUS_EVERY

    def _open_fifo(self) -> None:
        if not uses_fifo(self.pipeline):
            return
        path = self.fifo_path
        with contextlib.suppress(FileExistsError):
            os.mkfifo(path, 0o600)
        if not stat.S_ISFIFO(os.lstat(path).st_mode):
            raise KiriError(f"{path} exists and is not a FIFO; move it away")
        os.chmod(path, 0o600)
        if any(s.spec.output == "fifo" for s in self.stages.values()):
            # Read-write, so opening never waits for a reader and a reader's restart is no EPIPE.
            self.fifo.attach(os.open(path, os.O_RDWR | os.O_NONBLOCK))

    @contextlib.contextmanager
    def _signals(self) -> Iterator[None]:
        """Signals only queue themselves; the wakeup pipe interrupts the wait to handle them."""
        r, w = os.pipe()
        for fd in (r, w):
            os.set_blocking(fd, False)
        self.wake_fd = r
        old_fd = signal.set_wakeup_fd(w)
        old = {sig: signal.signal(sig, self._on_signal) for sig in (*STOP_SIGNALS, signal.SIGCHLD)}
        try:
            yield
        finally:
            signal.set_wakeup_fd(old_fd)
            for sig, handler in old.items():
                signal.signal(sig, handler)
            os.close(r)
            os.close(w)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum != signal.SIGCHLD:  # SIGCHLD only wakes the loop up to reap
            self.signals.append(signum)

    def _drain_wakeups(self) -> None:
        with contextlib.suppress(BlockingIOError):
            while os.read(self.wake_fd, 512):
                pass


@contextlib.contextmanager
def exclusive(home: Path) -> Iterator[None]:
    """Hold $KIRI_HOME/supervise.lock: one supervisor per KIRI_HOME, or they would fight over
    the FIFO, the status file and the recordings."""
    fd = os.open(home / "supervise.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(fd, 32).decode(errors="replace").strip() or "?"
            raise KiriError(
                f"another kiri-supervise (pid {other}) is running with KIRI_HOME {home}"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kiri-supervise",
        description="Run the stages of a pipeline file: hold their pipes, restart them when "
        "they die, stop them in order on SIGTERM, and keep $KIRI_HOME/status.json.",
    )
    add_version_option(parser)
    parser.add_argument(
        "pipeline",
        nargs="?",
        type=Path,
        default=DEFAULT_PIPELINE,
        metavar="PIPELINE",
        help=f"the pipeline file (default: {DEFAULT_PIPELINE})",
    )
    parser.add_argument(
        "--check", action="store_true", help="check the pipeline file, print its stages and exit"
    )
    return parser


def describe(pipeline: Pipeline, path: Path) -> list[str]:
    """The stages of a checked pipeline, as `--check` prints them."""
    fifo = kiri_home() / "feedback.fifo"
    alerts = f"; alerts go to {pipeline.alerts}" if pipeline.alerts else ""
    rows = [["STAGE", "INPUTS", "OUTPUT", "COMMAND"]]
    for spec in pipeline.stages:
        rows.append(
            [
                spec.name,
                ",".join(spec.inputs) or "-",
                spec.output,
                shlex.join(stage_argv(spec, fifo)),
            ]
        )
    return [
        f"pipeline {pipeline.name} ({path}): {len(pipeline.stages)} stages{alerts}",
        *table(rows),
    ]


class Lifeline:
    """The supervisor's end of the lifeline pipe (kiri/supervise/lifeline.py): while it is open, the
    lifeline process waits; once it closes, however the supervisor ended, the lifeline ends
    every stage process group it was told of and not told had ended."""

    def __init__(self, grace: float, log: Log) -> None:
        self.log = log
        read_end, self.fd = os.pipe()
        try:
            # Its own process group: a Ctrl-C meant for the supervisor does not end it.
            self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                [sys.executable, "-m", "kiri.supervise.lifeline", str(grace)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                process_group=0,
            )
        finally:
            os.close(read_end)

    def tell(self, message: str) -> None:
        """`+PGID` or `-PGID`; a lifeline that has gone is reported once, not fatal."""
        if self.proc is None:
            return
        try:
            os.write(self.fd, f"{message}\n".encode())
        except OSError as e:
            self.log.warning("lifeline_lost", pid=self.proc.pid, error=str(e))
            self.proc = None

    def __enter__(self) -> Lifeline:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):  # it waits for what is left
                self.proc.wait(timeout=1)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    complete(parser)
    args = parser.parse_args(argv)
    log = setup_logging("supervise")
    try:
        pipeline = load(args.pipeline)
    except PipelineError as e:
        for line in str(e).splitlines():
            print(f"Error: {line}", file=sys.stderr)
        return 2
    path = args.pipeline.resolve()
    if args.check:  # config.toml too, which run_main checks as every stage does
        return run_main(lambda: print("\n".join(describe(pipeline, path))))

    def body() -> None:
        with exclusive(private_dir(kiri_home())):
            Supervisor(pipeline, path, log).run()

    return run_main(body)


if __name__ == "__main__":
    sys.exit(main())
