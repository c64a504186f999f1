"""The person's task log, kept with `kiri task`: what the drift atom watches.

A task is added to a project (the current one unless told otherwise) and later marked done; a
switch records the moment the person moved to another project, and the current project is the
last one switched to. The log lives in the store (kiri.db), where the drift collector reads it
back as times (TaskHistory) and counts what happened in each window.
"""

from __future__ import annotations

import argparse
import bisect
import time

import msgspec

from kiri.home.store import Store, TaskRow, reading
from kiri.wire.errors import KiriError
from kiri.wire.output import print_json


def cmd_task(args: argparse.Namespace) -> None:
    """kiri task add|done|switch|list"""
    if args.action == "list":  # reads only: no store is made for it
        _list(reading(lambda store: store.tasks(include_done=args.all), []), args)
        return
    with Store() as store:
        ACTIONS[args.action](store, args)


def _add(store: Store, args: argparse.Namespace) -> None:
    title = args.title.strip()
    if not title:
        raise KiriError("a task needs a title")
    project = store.current_project() if args.project is None else args.project.strip()
    print(store.add_task(title, project))  # the id alone, so a script can keep it


def _done(store: Store, args: argparse.Namespace) -> None:
    task = store.finish_task(args.id)
    print(f"task {task.id} done: {task.title}")


def _switch(store: Store, args: argparse.Namespace) -> None:
    project = args.project.strip()
    if not project:
        raise KiriError("name the project to switch to")
    if project == store.current_project():  # not a switch: the drift atom must not count it
        print(f"already on project {project}")
        return
    store.add_switch(project)
    print(f"switched to project {project}")


def _list(rows: list[TaskRow], args: argparse.Namespace) -> None:
    if args.json:
        print_json({"tasks": [msgspec.structs.asdict(r) for r in rows]})
        return
    if not rows:
        print("no tasks yet" if args.all else "no open tasks")
        return
    now = time.time()
    width = max(len("project"), *(len(r.project) for r in rows))
    done = f"  {'done':>7}" if args.all else ""  # the done column only with --all
    print(f"{'id':>4}  {'age':>4}{done}  {'project':<{width}}  title")
    for r in rows:
        done = f"  {_finished(r, now):>7}" if args.all else ""
        print(f"{r.id:>4}  {age(now - r.created):>4}{done}  {r.project or '-':<{width}}  {r.title}")


def _finished(task: TaskRow, now: float) -> str:
    return "open" if task.done is None else f"{age(now - task.done)} ago"


def age(seconds: float) -> str:
    """How long, in the largest whole unit: 45s, 12m, 3h, 5d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{max(0, int(seconds))}s"


ACTIONS = {"add": _add, "done": _done, "switch": _switch}


class TaskHistory(msgspec.Struct):
    """The whole task log as sorted times: when tasks were added, when they were completed,
    and when the person switched projects."""

    created: list[float]
    done: list[float]
    switches: list[float]

    @classmethod
    def load(cls, store: Store) -> TaskHistory:
        return cls(*store.task_times())

    def first(self) -> float | None:
        """When the log begins; None while it is empty."""
        starts = [times[0] for times in (self.created, self.done, self.switches) if times]
        return min(starts) if starts else None

    def window(self, start: float, end: float) -> dict[str, float]:
        """Tasks added, completed and project switches in [start, end), and the tasks still
        open at its end."""

        def between(times: list[float]) -> int:
            return bisect.bisect_left(times, end) - bisect.bisect_left(times, start)

        backlog = bisect.bisect_left(self.created, end) - bisect.bisect_left(self.done, end)
        return {
            "added": float(between(self.created)),
            "done": float(between(self.done)),
            "switches": float(between(self.switches)),
            "backlog": float(backlog),
        }
