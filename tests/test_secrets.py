"""Secrets stay secret when things go wrong: malformed URLs through the real kiri-act and
kiri-collect telegram, and the exec sink's environment."""

import json
import os
import signal
import subprocess
import sys

import pytest
from conftest import fixture_bytes, log_events, stage_cmd

TOKEN = "123456:AAE-secret_token_Value9"
HOOK_SECRET = "kiri-hook-signing-7f3a9c"
# What must never show: the token (and its secret half), and the webhook URL's path token,
# query and password.
LEAKS = (TOKEN, TOKEN.split(":")[1], "S3CRET", "P4THX", "qs3cret", "pw0rd9")
ALERT = fixture_bytes("decisions.ndjson").splitlines()[3]


def configure(kiri_home, text):
    kiri_home.mkdir(parents=True, exist_ok=True)
    (kiri_home / "config.toml").write_text(text)


def assert_no_leak(*texts):
    for given in texts:
        data = given if isinstance(given, bytes) else given.encode()
        for secret in LEAKS:
            assert secret.encode() not in data, f"{secret!r} in {data!r}"


def written_files(kiri_home):
    """Every file kiri-act wrote under KIRI_HOME (its logs, the store): all but config.toml."""
    return [p for p in kiri_home.rglob("*") if p.is_file() and p.name != "config.toml"]


@pytest.mark.parametrize(
    "api_path, hook",
    [
        ("/x y", "/hooks/S3CRETP4THX x?k=qs3cret"),  # a space
        ("/x\\ty", "/hooks/S3CRET\\nP4THX?k=qs3cret"),  # control characters, quoted by repr
        ("/x\\u00e9", "/hooks/S3CRETP4THX\\u00e9?k=qs3cret"),  # not ASCII
        ("", "/hooks/S3CRETP4THX?k=qs3cret#x y"),  # a fragment with a space
    ],
)
def test_a_malformed_url_fails_the_delivery_without_a_secret_in_outcomes_logs_or_files(
    kiri_home, monkeypatch, api_path, hook
):
    monkeypatch.setenv("KIRI_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("KIRI_WEBHOOK_SECRET", HOOK_SECRET)
    configure(
        kiri_home,
        f'[telegram]\ntoken_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = 1001\n'
        f'api_url = "http://127.0.0.1:9{api_path}"\n'
        f'[webhook]\nurl = "http://kiri:pw0rd9@127.0.0.1:9{hook}"\n'
        f'secret_env = "KIRI_WEBHOOK_SECRET"\n',
    )
    out = subprocess.run(
        stage_cmd(
            "kiri.act.stage",
            "--sink",
            "telegram",
            "--sink",
            "webhook",
            "--sink",
            "log",
            "--retries",
            "1",
        ),
        input=ALERT + b"\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    outcomes = {r["sink"]: r for r in map(json.loads, out.stdout.splitlines()) if "sink" in r}
    assert outcomes.keys() == {"telegram", "webhook", "log"}
    assert outcomes["log"]["ok"] and not outcomes["telegram"]["ok"]
    assert outcomes["telegram"]["error"].startswith("telegram sendMessage: ")
    assert outcomes["webhook"]["error"].startswith("POST to 127.0.0.1:9: ")
    failed = [e for e in log_events(out.stderr) if e["event"] == "sink_failed"]
    assert {e["sink"] for e in failed} == {"telegram", "webhook"}
    assert "Traceback" not in out.stderr.decode()
    assert written_files(kiri_home)  # the log sink's file, at least: something was looked at
    assert_no_leak(out.stdout, out.stderr, *(p.read_bytes() for p in written_files(kiri_home)))


def test_a_malformed_api_url_fails_each_poll_without_the_token(kiri_home, monkeypatch):
    monkeypatch.setenv("KIRI_TELEGRAM_TOKEN", TOKEN)
    configure(
        kiri_home,
        '[telegram]\ntoken_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = 1001\n'
        'api_url = "http://127.0.0.1:9/x y"\n',
    )
    proc = subprocess.Popen(
        stage_cmd("kiri.collect.stage", "telegram", "--timeout", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    seen: list[dict] = []
    while not any(e["event"] == "poll_failed" for e in seen):  # it polls, or the read ends
        line = proc.stderr.readline()
        assert line, "kiri-collect telegram ended before a poll"
        seen += log_events(line)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and b"Traceback" not in err
    reasons = [e["reason"] for e in seen + log_events(err) if "reason" in e]
    assert reasons[0].startswith("telegram getMe: invalid URL: ")
    assert_no_leak(out, err, "\n".join(reasons))


# -- the exec sink's environment ----------------------------------------------------------------

DUMP_ENV = "import json, os, sys; json.dump(dict(os.environ), open(sys.argv[1], 'w'))"


def test_the_exec_command_runs_without_the_secret_variables(kiri_home, monkeypatch, tmp_path):
    configure(
        kiri_home,
        '[telegram]\ntoken_env = "BOT_TOKEN_OF_MINE"\nchat_id = 1001\n'
        '[webhook]\nurl = "https://hooks.example.org/x"\nsecret_env = "HOOK_KEY"\n'
        '[mikrotik]\npassword_env = "ROUTER_PW"\n',
    )
    secrets = {
        "BOT_TOKEN_OF_MINE": TOKEN,
        "HOOK_KEY": HOOK_SECRET,
        "ROUTER_PW": "router-pw-31337",
        "KIRI_TELEGRAM_TOKEN": TOKEN,
        "KIRI_WEBHOOK_SECRET": HOOK_SECRET,
        "KIRI_ROUTER_PASSWORD": "router-pw-31337",
        "KIRI_TELEGRAM_TOKEN_FILE": "/home/me/.kiri/telegram-token",
    }
    for name, value in {**secrets, "KIRI_LOG_LEVEL": "info", "PLAIN_SETTING": "1"}.items():
        monkeypatch.setenv(name, value)
    got = tmp_path / "env.json"
    # It dumps its environment, then fails saying a secret it knew some other way.
    code = f"{DUMP_ENV}; sys.exit('cannot page: token {TOKEN} refused')"
    out = subprocess.run(
        stage_cmd(
            "kiri.act.stage",
            "--sink",
            "exec",
            "--retries",
            "0",
            "--",
            sys.executable,
            "-c",
            code,
            str(got),
        ),
        input=ALERT + b"\n",
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert out.returncode == 0, out.stderr.decode()
    env = json.loads(got.read_text())
    assert not secrets.keys() & env.keys()
    assert {"PATH", "KIRI_HOME", "KIRI_LOG_LEVEL", "PLAIN_SETTING"} <= env.keys()
    [outcome] = [r for r in map(json.loads, out.stdout.splitlines()) if r["kind"] == "outcome"]
    assert outcome["error"] == "exit status 1: cannot page: token *** refused"
    assert TOKEN not in out.stderr.decode()
    assert os.environ["KIRI_TELEGRAM_TOKEN"] == TOKEN  # kiri-act's own environment is its own
