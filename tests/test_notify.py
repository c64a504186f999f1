"""The notify sink, through the real kiri-act, with fake notifiers on PATH recording their argv."""

import json
import os
import subprocess
import sys

import pytest
from conftest import fixture_bytes, log_events, stage_cmd

LINES = fixture_bytes("decisions.ndjson").splitlines()
OK, ALERT, RESOLVE = LINES[1], LINES[3], LINES[7]
SUMMARY = json.loads(ALERT)["summary"]
NAMED = "\nd-1   M9 (z 12.1)\nd-1   C9 (z 9.4)"  # the culprits it names, as every sink tells them


def text(id: str, head: str, summary: str, named: str = NAMED) -> str:
    """The alert as every sink tells it (kiri.wire.render.alert_text)."""
    return f"{id} {head} pulse@vm: {summary}{named}"


TRICKY = 'disk "full" \\ on <b>vm</b> & `rm -rf` $(x)\n'  # quotes, markup, shell, a newline


def decision(line: bytes, **fields) -> bytes:
    return json.dumps({**json.loads(line), **fields}).encode()


@pytest.fixture
def bin_dir(tmp_path):
    path = tmp_path / "bin"
    path.mkdir()
    return path


def fake(bin_dir, name: str, status: int = 0, stderr: str = "") -> None:
    """A notifier that appends its argv, as one JSON line, to NAME.calls beside it."""
    script = bin_dir / name
    script.write_text(
        f"#!{sys.executable}\nimport json, sys\n"
        f"with open({str(bin_dir / (name + '.calls'))!r}, 'a') as f:\n"
        f"    f.write(json.dumps(sys.argv[1:]) + '\\n')\n"
        f"sys.stderr.write({stderr!r})\nsys.exit({status})\n"
    )
    script.chmod(0o755)


def calls(bin_dir, name: str) -> list[list[str]]:
    path = bin_dir / f"{name}.calls"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def act(bin_dir, *lines: bytes) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """kiri-act --sink notify with PATH holding only `bin_dir`."""
    out = subprocess.run(
        stage_cmd("kiri.act.stage", "--sink", "notify", "--retries", "0"),
        input=b"".join(line + b"\n" for line in lines),
        capture_output=True,
        timeout=30,
        env={**os.environ, "PATH": str(bin_dir)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return out, [json.loads(line) for line in out.stdout.splitlines() if b'"outcome"' in line]


def test_notify_send_gets_title_urgency_and_message_as_argv(bin_dir):
    fake(bin_dir, "notify-send")
    critical = decision(ALERT, severity="critical")
    tricky = decision(ALERT, id="d-9", summary=TRICKY)
    _, outcomes = act(bin_dir, OK, ALERT, critical, tricky, RESOLVE)
    app = "--app-name=KIRI"
    tricky_named = NAMED.replace("d-1", "d-9")
    assert calls(bin_dir, "notify-send") == [
        [
            app,
            "--urgency=normal",
            "--",
            "KIRI d-1: pulse unusual on vm (warning)",
            text("d-1", "WARNING", SUMMARY),
        ],
        [
            app,
            "--urgency=critical",
            "--",
            "KIRI d-1: pulse unusual on vm (critical)",
            text("d-1", "CRITICAL", SUMMARY),
        ],
        [
            app,
            "--urgency=normal",
            "--",
            "KIRI d-9: pulse unusual on vm (warning)",
            text(
                "d-9",
                "WARNING",
                'disk "full" \\ on &lt;b&gt;vm&lt;/b&gt; &amp; `rm -rf` $(x)?',
                tricky_named,
            ),
        ],
        [
            app,
            "--urgency=low",
            "--",
            "KIRI d-4: pulse back to normal on vm",
            f"d-4 RESOLVED pulse@vm: {json.loads(RESOLVE)['summary']}",
        ],
    ]
    assert [(o["id"], o["ok"], o["detail"]) for o in outcomes] == [
        ("d-1", True, f"{bin_dir}/notify-send: KIRI d-1: pulse unusual on vm (warning)"),
        ("d-1", True, f"{bin_dir}/notify-send: KIRI d-1: pulse unusual on vm (critical)"),
        ("d-9", True, f"{bin_dir}/notify-send: KIRI d-9: pulse unusual on vm (warning)"),
        ("d-4", True, f"{bin_dir}/notify-send: KIRI d-4: pulse back to normal on vm"),
    ]


def test_osascript_reads_the_text_from_its_arguments_never_from_its_script(bin_dir):
    fake(bin_dir, "osascript")
    grouped = decision(ALERT, summary=TRICKY, atoms=["pulse", "rhythm"])
    act(bin_dir, grouped)
    [argv] = calls(bin_dir, "osascript")
    assert argv == [
        "-e",
        "on run argv",
        "-e",
        "display notification (item 2 of argv) with title (item 1 of argv)",
        "-e",
        "end run",
        "KIRI d-1: pulse, rhythm unusual on vm (warning)",
        f"d-1 WARNING pulse, rhythm@vm: {TRICKY.replace(chr(10), '?')}{NAMED}",
    ]


def test_a_failing_notifier_fails_the_delivery_with_its_reason(bin_dir):
    fake(bin_dir, "notify-send", status=1, stderr="Cannot autolaunch D-Bus without X11 $DISPLAY\n")
    _, [outcome] = act(bin_dir, ALERT)
    assert outcome["ok"] is False
    assert outcome["error"] == (
        f"{bin_dir}/notify-send: exit status 1: Cannot autolaunch D-Bus without X11 $DISPLAY"
    )


def test_without_a_notifier_one_line_at_start_and_every_delivery_is_skipped(bin_dir):
    out, outcomes = act(bin_dir, ALERT, OK, ALERT, RESOLVE)  # bin_dir is empty
    [warning] = [e for e in log_events(out.stderr) if e["event"] == "notify_unavailable"]
    assert "neither notify-send nor osascript is on PATH" in warning["reason"]
    assert [e["event"] for e in log_events(out.stderr)] == ["notify_unavailable"]
    assert [(o["id"], o["ok"], o["detail"]) for o in outcomes] == [
        ("d-1", True, "skipped: no notifier"),
        ("d-1", True, "skipped: no notifier"),
        ("d-4", True, "skipped: no notifier"),
    ]
