"""The webhook sink, through the real kiri-act, against an HTTP receiver on 127.0.0.1."""

import hashlib
import hmac
import json
import os
import subprocess
import time

import msgspec
import pytest
from conftest import fixture_bytes, log_events, stage_cmd
from scripted_http import Answer, scripted_server

from kiri.wire.records import Decision
from kiri.wire.render import alert_text

LINES = fixture_bytes("decisions.ndjson").splitlines()
OK, ALERT, RESOLVE = LINES[1], LINES[3], LINES[7]
SECRET = "kiri-test-secret-7f3a9c"


def posted(line: bytes) -> bytes:
    """What the receiver gets: the decision's every byte, and its text as every sink tells it."""
    text = json.dumps(alert_text(msgspec.json.decode(line, type=Decision)), ensure_ascii=False)
    return line[:-1] + b',"text":' + text.encode() + b"}"


@pytest.fixture
def receiver():
    with scripted_server() as server:
        yield server


def configure(kiri_home, text: str) -> None:
    kiri_home.mkdir(exist_ok=True)
    (kiri_home / "config.toml").write_text(text)


@pytest.fixture
def signed(kiri_home, receiver, monkeypatch):
    """A receiver configured with a signing secret from the environment."""
    where, handler = receiver
    monkeypatch.setenv("KIRI_WEBHOOK_SECRET", SECRET)
    configure(
        kiri_home,
        f'[webhook]\nurl = "http://{where}/hooks/kiri"\n'
        f'secret_env = "KIRI_WEBHOOK_SECRET"\ntimeout = 0.5\n',
    )
    return where, handler


def act(*lines: bytes, retries: str = "2") -> tuple[subprocess.CompletedProcess, list[dict]]:
    out = subprocess.run(
        stage_cmd("kiri.act.stage", "--sink", "webhook", "--retries", retries),
        input=b"".join(line + b"\n" for line in lines),
        capture_output=True,
        timeout=30,
        env=os.environ,
        check=False,
    )
    outcomes = [json.loads(line) for line in out.stdout.splitlines() if b'"outcome"' in line]
    return out, outcomes


def test_each_alert_and_resolve_is_posted_as_the_decision_itself_signed_with_the_secret(signed):
    where, handler = signed
    out, outcomes = act(OK, ALERT, RESOLVE)
    assert out.returncode == 0
    assert [r.body for r in handler.seen] == [posted(ALERT), posted(RESOLVE)]  # no `ok`
    text = json.loads(handler.seen[0].body)["text"]
    assert text.splitlines() == [
        f"d-1 WARNING pulse@vm: {json.loads(ALERT)['summary']}",
        "d-1   M9 (z 12.1)",
        "d-1   C9 (z 9.4)",
    ]
    for (_, _, headers, body), line in zip(handler.seen, (ALERT, RESOLVE), strict=True):
        assert headers["Content-Type"] == "application/json"
        assert headers["User-Agent"].startswith("kiri/")
        assert headers["Idempotency-Key"] == json.loads(line)["id"]
        # what a receiver does: recompute the HMAC over the exact body, compare in constant time
        expected = hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Kiri-Signature"], f"sha256={expected}")
    assert [(o["id"], o["sink"], o["ok"], o["detail"]) for o in outcomes] == [
        ("d-1", "webhook", True, f"POST to {where}: HTTP 200"),
        ("d-4", "webhook", True, f"POST to {where}: HTTP 200"),
    ]
    assert SECRET.encode() not in out.stdout + out.stderr


def test_a_503_is_retried_with_the_same_idempotency_key_and_signature(signed):
    where, handler = signed
    handler.script.append(Answer(503, b"busy"))
    out, outcomes = act(ALERT)
    assert len(handler.seen) == 2
    (*_, first, body1), (*_, second, body2) = handler.seen
    assert body1 == body2 == posted(ALERT)
    assert first["Idempotency-Key"] == second["Idempotency-Key"] == "d-1"
    assert first["X-Kiri-Signature"] == second["X-Kiri-Signature"]
    assert [o["ok"] for o in outcomes] == [True]
    [failed] = [e for e in log_events(out.stderr) if e["event"] == "sink_failed"]
    assert failed["error"] == f"POST to {where}: HTTP 503 busy" and failed["attempt"] == 1


def test_a_400_fails_at_once_with_the_receivers_reason(signed):
    where, handler = signed
    handler.script.append(Answer(400, b'{"error": "unknown host vm"}'))
    _, [outcome] = act(ALERT, retries="2")
    assert len(handler.seen) == 1  # refused: kiri-act does not try again
    assert outcome["ok"] is False and outcome["detail"] == "attempts: 1"
    assert outcome["error"] == f"POST to {where}: HTTP 400 unknown host vm"


def test_a_receiver_that_does_not_answer_in_time_fails_the_delivery(signed):
    where, handler = signed
    handler.script.append(Answer(200, delay=2.0))  # longer than the configured 0.5 s
    started = time.monotonic()
    out, [outcome] = act(ALERT, retries="0")
    assert time.monotonic() - started < 2.0
    assert outcome["ok"] is False and outcome["error"].startswith(f"POST to {where}: ")
    assert outcome["error"].removeprefix(f"POST to {where}: ").strip()  # the socket's reason
    assert SECRET.encode() not in out.stdout + out.stderr


def test_without_a_secret_the_body_goes_unsigned(kiri_home, receiver):
    where, handler = receiver
    configure(kiri_home, f'[webhook]\nurl = "http://{where}/"\n')
    _, [outcome] = act(ALERT)
    assert outcome["ok"] is True
    [(_, _, headers, body)] = handler.seen
    assert body == posted(ALERT) and "X-Kiri-Signature" not in headers


@pytest.mark.parametrize(
    "config, status, error",
    [
        ("", 1, 'Error: --sink webhook needs url = "https://…" in [webhook] of '),
        (
            '[webhook]\nurl = "file:///etc/passwd"\n',
            2,
            "Error: config.toml: [webhook] url must be an http:// or https:// URL",
        ),
        (
            '[webhook]\nurl = "https://example.org/"\ntimeout = 0\n',
            2,
            "Error: config.toml: [webhook] timeout must be a number of seconds above 0, not 0",
        ),
        (
            '[webhook]\nurl = "https://example.org/"\nsecret_env = "KIRI_NO_SUCH_VAR"\n',
            1,
            "Error: config.toml: [webhook] secret_env names $KIRI_NO_SUCH_VAR, which is not set",
        ),
        (
            '[webhook]\nurl = "https://example.org/"\nsecert_env = "KIRI_WEBHOOK_SECRET"\n',
            2,
            "Error: config.toml: [webhook] unknown key 'secert_env' (did you mean 'secret_env'?)",
        ),
    ],
)
def test_a_webhook_that_cannot_work_fails_the_start(kiri_home, config, status, error):
    configure(kiri_home, config)
    out, outcomes = act(ALERT)
    assert out.returncode == status and outcomes == [] and out.stdout == b""
    assert out.stderr.decode().startswith(error)
