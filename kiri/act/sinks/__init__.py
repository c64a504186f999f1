"""Where kiri-act delivers decisions: one module per sink, all behind the small `Sink` interface.

A sink delivers the decisions it `accepts` and reports each delivery by returning a short detail
or raising. kiri-act turns that into one `outcome` record per sink, retries failures, and never
lets a sink stop the stream. Decisions a sink does not deliver (`ok`, and `suppress` outside the
log) are only shown to it through `observe`, which most sinks ignore.

A module here with `open_sink(args, log) -> Sink` is a sink people can name with
`kiri-act --sink MODULE`; `HELP` says in a few words where it delivers, and an optional
`add_options(parser)` adds its own kiri-act options (`--NAME-…`). Settings and secrets come
from $KIRI_HOME/config.toml (kiri/home/config.py), never from argv.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, cast

from kiri.wire.log import Log
from kiri.wire.records import Decision, Outcome

if TYPE_CHECKING:  # the HTTP client is loaded by the sinks that speak HTTP, not by every kiri-act
    from kiri.clients.http import HttpError

NOTIFY = frozenset({"alert", "resolve"})
"""Actions that notify people. `suppress` is logged, not notified; `retrain` and `spawn` are
logged until kiri-act carries them out."""


class SinkError(Exception):
    """A delivery that failed for a reason worth one line in the outcome's `error`.

    `retry=False` says trying again cannot help (the receiver refused it); `wait` is how long
    the receiver asked to be left alone before the next try, in seconds."""

    def __init__(self, message: str, *, retry: bool = True, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry, self.wait = retry, wait

    @classmethod
    def from_http(cls, e: HttpError) -> SinkError:
        """A failed request: tried again only if the failure was transient, after the wait the
        server asked for."""
        return cls(str(e), retry=e.transient, wait=e.retry_after)


class Sink(ABC):
    """Somewhere decisions go. `name` is what outcomes and `--sink` call it; `secrets` are what
    it knows that no outcome or log line may show (kiri-act redacts its every error of them)."""

    name = ""
    secrets: tuple[str, ...] = ()

    def accepts(self, decision: Decision) -> bool:
        """Whether this sink delivers `decision`, and so reports an outcome for it."""
        return decision.action in NOTIFY

    @abstractmethod
    def deliver(self, decision: Decision, line: bytes) -> str:
        """Deliver one decision (`line` is its JSON line); return a short detail or raise."""

    def observe(self, decision: Decision) -> None:
        """See a decision this sink does not deliver; most sinks have nothing to do with it."""
        return  # by default, nothing

    def on_outcome(self, outcome: Outcome) -> None:
        """Hear how one delivery went, to this sink or another; most sinks do not listen."""
        return  # by default, nothing

    def tick(self) -> None:
        """Called about once a second, decisions or none: for a sink's background work."""
        return  # by default there is none

    def wait_with(self, sleep: Callable[[float], bool]) -> None:
        """kiri-act hands each sink its stage's sleep, which a stop signal cuts short (it then
        returns False); a sink that waits, for a rate limit say, waits with it."""
        return  # by default the sink never waits

    def close(self) -> None:
        """Release what the sink holds (files, the terminal)."""
        return  # by default it holds nothing


class SinkModule(Protocol):
    """A sink module, as kiri-act sees it (and perhaps `add_options(parser)` besides)."""

    HELP: str

    def open_sink(self, args: argparse.Namespace, log: Log) -> Sink: ...


def sink_names() -> list[str]:
    """The sinks people can choose, in name order, found without importing them (each brings
    what it delivers with: an HTTP client, a desktop bus)."""
    return sorted(info.name for info in pkgutil.iter_modules(__path__))


def sink_module(name: str) -> SinkModule:
    module = importlib.import_module(f"{__name__}.{name}")
    if not hasattr(module, "open_sink"):
        raise ValueError(f"kiri.act.sinks.{name} is no sink: it has no open_sink")
    return cast(SinkModule, module)  # it has open_sink: it is one
