"""`kiri service install|uninstall|status`: kiri-supervise as a launchd agent or a systemd user
service, rendered from the templates in pipelines/ (dev.kiri.plist, kiri.service).

The service runs this checkout's bin/kiri-supervise on a pipeline file, with KIRI_HOME set to
the current one. After writing the file, install asks the service manager to load and start it
(`systemctl --user daemon-reload`, `enable`, `restart`; or `launchctl load -w`) when it is
there and answers; where it is not (a container without a user systemd, say), the file stays
written and install says how to start KIRI instead. Either way it exits 0.
"""

from __future__ import annotations

import argparse
import os
import plistlib
import shlex
import sys
from pathlib import Path
from string import Template
from xml.sax.saxutils import escape

from kiri.home.paths import atomic_write, kiri_home, private_dir
from kiri.supervise.pipeline import CHECKOUT, DEFAULT_PIPELINE, PipelineError, load
from kiri.wire.children import ChildError, Finished, NotFoundError, run
from kiri.wire.errors import KiriError

UNIT = "kiri.service"
LABEL = "dev.kiri"
TEMPLATES = {"linux": UNIT, "macos": f"{LABEL}.plist"}
SUPERVISE = CHECKOUT / "bin" / "kiri-supervise"
MANAGER_TIMEOUT = 60.0  # seconds systemctl or launchctl may take


def this_platform() -> str:
    return "macos" if sys.platform == "darwin" else "linux"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    s = sub.add_parser("service", help="run kiri-supervise as a launchd or systemd user service")
    actions = s.add_subparsers(dest="action", required=True, metavar="ACTION")
    install = actions.add_parser("install", help="write the service file and start the service")
    install.add_argument(
        "--pipeline",
        type=Path,
        default=DEFAULT_PIPELINE,
        metavar="PATH",
        help=f"the pipeline file the service runs (default: {DEFAULT_PIPELINE})",
    )
    install.add_argument(
        "--dry-run", action="store_true", help="print the service file instead of writing it"
    )
    uninstall = actions.add_parser("uninstall", help="stop the service and remove its file")
    status = actions.add_parser("status", help="whether the service is installed and running")
    for p in (install, uninstall, status):
        p.add_argument(
            "--platform",
            choices=tuple(TEMPLATES),
            default=this_platform(),
            help="launchd (macos) or systemd (linux); default: this system's",
        )


def cmd_service(args: argparse.Namespace) -> int:
    return {"install": install, "uninstall": uninstall, "status": status}[args.action](args)


def service_file(platform: str) -> Path:
    if platform == "macos":
        return Path.home() / "Library" / "LaunchAgents" / f"{LABEL}.plist"
    config = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config / "systemd" / "user" / UNIT


def render(platform: str, pipeline: Path, home: Path) -> str:
    """The service file for `platform`, running `pipeline` with KIRI_HOME=`home`."""
    values = {
        "supervise": SUPERVISE,
        "pipeline": pipeline,
        "kiri_home": home,
        "logs": home / "logs",
        "checkout": CHECKOUT,
    }
    if any("\n" in str(v) for v in values.values()):
        raise KiriError("a path holds a newline; a service file cannot carry it")
    template = Template((CHECKOUT / "pipelines" / TEMPLATES[platform]).read_text())
    if platform == "macos":
        return template.substitute({k: escape(str(v)) for k, v in values.items()})
    return template.substitute(
        exec_start=" ".join(_unit_word(str(p), command=True) for p in (SUPERVISE, pipeline)),
        environment=_unit_word(f"KIRI_HOME={home}", command=False),
    )


def _unit_word(text: str, *, command: bool) -> str:
    """One double-quoted word of a unit file: backslashes, quotes and specifiers escaped."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    if command:  # ExecStart= expands $NAME; Environment= does not
        text = text.replace("$", "$$")
    return f'"{text}"'


def start_commands(platform: str, path: Path) -> list[list[str]]:
    if platform == "macos":
        return [["launchctl", "load", "-w", str(path)]]
    return [
        ["systemctl", "--user", "daemon-reload"],
        ["systemctl", "--user", "enable", UNIT],
        ["systemctl", "--user", "restart", UNIT],
    ]


def stop_commands(platform: str, path: Path) -> list[list[str]]:
    if platform == "macos":
        return [["launchctl", "unload", "-w", str(path)]]
    return [["systemctl", "--user", "disable", "--now", UNIT]]


def install(args: argparse.Namespace) -> int:
    pipeline = args.pipeline.resolve()
    try:
        load(pipeline)
    except PipelineError as e:
        for line in str(e).splitlines():
            print(f"Error: {line}", file=sys.stderr)
        return 2
    home = kiri_home()
    text = render(args.platform, pipeline, home)
    if args.dry_run:
        print(text, end="")
        return 0
    path = service_file(args.platform)
    path.parent.mkdir(parents=True, exist_ok=True)
    private_dir(home / "logs")  # launchd opens its log files there before KIRI starts
    if args.platform == "macos" and path.exists():
        _run(["launchctl", "unload", str(path)])  # a reinstall replaces the loaded agent
    atomic_write(path, text.encode())
    print(f"wrote {path}")
    commands = start_commands(args.platform, path)
    if manage(commands):
        print(f"started: kiri-supervise runs {pipeline}; `kiri status` shows its stages")
        if args.platform == "linux":
            print("to keep it running while you are logged out: loginctl enable-linger")
    else:
        print(f"start it with: {' && '.join(shlex.join(c) for c in commands)}")
        print(f"or run it in the foreground: {shlex.join([str(SUPERVISE), str(pipeline)])}")
    return 0


def uninstall(args: argparse.Namespace) -> int:
    path = service_file(args.platform)
    if not path.exists():
        print(f"kiri service is not installed (no {path})")
        return 0
    stopped = manage(stop_commands(args.platform, path))
    path.unlink()
    print(f"removed {path}")
    if args.platform == "linux" and stopped:
        manage([["systemctl", "--user", "daemon-reload"]])
    if not stopped:
        print("if kiri-supervise still runs, stop it with: kill -TERM PID (`kiri status` shows it)")
    return 0


def status(args: argparse.Namespace) -> int:
    path = service_file(args.platform)
    if not path.exists():
        raise KiriError(
            f"kiri service is not installed: no {path} (`kiri service install` installs it)"
        )
    print(f"installed: {path}")
    print(f"runs: {shlex.join(program(args.platform, path))}")
    if args.platform == "macos":
        found = _run(["launchctl", "list", LABEL])
        state = "loaded" if found and found.status == 0 else "not loaded"
    else:
        found = _run(["systemctl", "--user", "is-active", UNIT])
        state = found.stdout.decode("utf-8", "replace").strip() if found else ""
    manager = "launchd" if args.platform == "macos" else "systemd"
    if found is None or not state:
        reason = _reason(found) if found else "not available here"
        print(f"{manager}: cannot tell ({reason})")
    else:
        print(f"{manager}: {state}")
    return 0


def program(platform: str, path: Path) -> list[str]:
    """The command line an installed service file runs."""
    if platform == "macos":
        arguments: object = plistlib.loads(path.read_bytes())["ProgramArguments"]
        return [str(a) for a in arguments] if isinstance(arguments, list) else []
    for line in path.read_text().splitlines():
        if line.startswith("ExecStart="):
            return shlex.split(line.removeprefix("ExecStart=").replace("%%", "%"))
    return []


def manage(commands: list[list[str]]) -> bool:
    """Run the service manager's commands in turn; False, having said why, if one fails."""
    for command in commands:
        done = _run(command)
        if done is None:
            print(f"{command[0]} is not available here, so nothing started or stopped KIRI")
            return False
        if done.status:
            print(f"`{shlex.join(command)}` failed: {_reason(done)}")
            return False
    return True


def _run(command: list[str]) -> Finished | None:
    """Run a service manager's command, capturing its output; None if it is not installed."""
    try:
        return run(command, timeout=MANAGER_TIMEOUT, check=False)  # the callers read the status
    except NotFoundError:
        return None
    except ChildError as e:
        raise KiriError(f"`{shlex.join(command)}` failed: {e}") from None


def _reason(done: Finished) -> str:
    lines = (done.stderr or done.stdout).decode("utf-8", "replace").strip().splitlines()
    return lines[0] if lines else f"exit status {done.status}"
