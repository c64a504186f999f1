"""Telegram: `kiri-act --sink telegram` and `kiri-collect telegram` against a fake Bot API
(tests/fake_telegram.py), and the feedback loop closed through its buttons."""

import json
import os
import signal
import subprocess
import time
from itertools import pairwise

import msgspec
import pytest
from conftest import log_events, loop_pipeline, run, stage_cmd
from fake_telegram import FakeTelegram
from test_loop import STRESS, Loop, newest_alert, recorded, wait_for

from kiri.clients.telegram import RateLimits, keyboard, parse_press
from kiri.home.store import Store
from kiri.wire.records import Culprit, Decision

TOKEN = "123456:AAE-secret_token_Value9"
CHAT = 1001
ALICE = {"id": CHAT, "is_bot": False, "first_name": "Alice", "username": "alice"}
MALLORY = {"id": 666, "is_bot": False, "first_name": "Mallory"}
CULPRITS = [("C9", 21.4), ("M4", 8.1), ("L3", 7.0), ("D2", 0.1)]
CPU_HIGH = Culprit(
    token="C9", atom="pulse", field="cpu", label="CPU", unit="%", value=100.0,
    direction="high", low=3.0, high=20.0, z=21.4, worse="high",
)  # fmt: skip
encode = msgspec.json.Encoder().encode


def decision(id, action="alert", incident="i1"):
    return Decision(
        ts=time.time(),
        id=id,
        atom="pulse",
        host="vm",
        action=action,
        severity="critical" if action == "alert" else "",
        surprise=21.4,
        threshold=6.3,
        culprits=CULPRITS,
        explained=[CPU_HIGH],
        incident=incident,
        atoms=["pulse"],
        summary="CPU 100% (C9) is <b>unusual</b> for vm_1 *now* [x](y) & more",
    )


@pytest.fixture
def fake():
    server = FakeTelegram(TOKEN).start()
    yield server
    server.close()


def write_config(home, body):
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(f"[telegram]\n{body}\n")


@pytest.fixture
def telegram(fake, kiri_home, monkeypatch):
    """A [telegram] config pointing at the fake, the token in $KIRI_TELEGRAM_TOKEN."""
    monkeypatch.setenv("KIRI_TELEGRAM_TOKEN", TOKEN)
    write_config(
        kiri_home, f'token_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = {CHAT}\napi_url = "{fake.url}"'
    )
    return fake


def assert_no_token(*texts):
    for given in texts:
        text = given.decode() if isinstance(given, bytes) else given
        assert TOKEN not in text and TOKEN.split(":")[1] not in text


def assert_argv_clean(proc):
    """The token is not in the argv we gave, nor in the one the process shows (/proc)."""
    assert_no_token(" ".join(proc.args))
    cmdline = f"/proc/{proc.pid}/cmdline"
    if os.path.exists(cmdline):
        with open(cmdline, "rb") as f:
            assert_no_token(f.read())


def act(*decisions):
    """kiri-act --sink telegram on these decisions: its records and its log events."""
    proc = subprocess.Popen(
        stage_cmd("kiri.act.stage", "--sink", "telegram"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert_argv_clean(proc)
    out, err = proc.communicate(b"".join(encode(d) + b"\n" for d in decisions), timeout=30)
    assert proc.returncode == 0, err.decode()
    assert_no_token(out, err)
    return [json.loads(line) for line in out.splitlines()], log_events(err)


def deliver(*decisions):
    """Through kiri-act --sink telegram and kiri-feedback, which records the delivered alerts."""
    proc = subprocess.run(
        stage_cmd("kiri.act.stage", "--sink", "telegram"),
        capture_output=True,
        input=b"".join(encode(d) + b"\n" for d in decisions),
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    assert run("kiri.feedback.stage", input=proc.stdout).returncode == 0


def sent(fake, alert):
    """The message the fake holds for an alert (found by the id its text ends with)."""
    return next(
        (
            m
            for m in list(fake.messages.values())
            if m["text"].split("\n\n")[0].endswith(f" · id {alert}")
        ),
        None,
    )


class Collector:
    """kiri-collect telegram, running."""

    def __init__(self, fake, *args):
        self.fake, self.polls = fake, len(fake.calls("getUpdates"))
        self.proc = subprocess.Popen(
            stage_cmd("kiri.collect.stage", "telegram", *args),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert_argv_clean(self.proc)

    def polling(self):
        """Wait until it has sent a long poll of its own."""
        self.fake.wait_for("a long poll", lambda: len(self.fake.calls("getUpdates")) > self.polls)
        return self

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0 and b"Traceback" not in err, err.decode()
        assert_no_token(out, err)
        return [json.loads(line) for line in out.splitlines()], log_events(err)


def answers(fake):
    return [r.params["text"] for r in fake.calls("answerCallbackQuery")]


def wait_answers(fake, n):
    return fake.wait_for(f"{n} answers", lambda: len(answers(fake)) >= n and answers(fake))


def verdicts():
    with Store() as store:
        return [
            (v.alert, v.verdict, v.normal, v.source, v.by, v.note) for v in store.verdicts_after(0)
        ]


# -- the sink ---------------------------------------------------------------------------------


def test_an_alert_is_plain_text_with_three_buttons_and_its_resolve_a_reply(telegram):
    fake = telegram
    out, _ = act(
        decision("3f9a2c1"), decision("3f9a2c2", "suppress"), decision("3f9a2c3", "resolve")
    )
    outcomes = [r for r in out if r["kind"] == "outcome"]
    assert [(o["id"], o["sink"], o["ok"], o["detail"]) for o in outcomes] == [
        ("3f9a2c1", "telegram", True, f"message 100 in chat {CHAT}"),
        ("3f9a2c3", "telegram", True, f"message 101 in chat {CHAT}"),
    ]  # suppress: not notified
    alert, resolve = fake.calls("sendMessage")
    assert alert.params["chat_id"] == CHAT and "parse_mode" not in alert.params
    lines = alert.params["text"].splitlines()
    # the summary verbatim, then the culprit explained, as every sink tells it
    assert lines[0] == (
        "🔴 KIRI 3f9a2c CRITICAL pulse@vm: CPU 100% (C9) is <b>unusual</b> for vm_1 *now* [x](y) "
        "& more"
    )
    assert lines[1] == "3f9a2c   CPU 100% is high for vm (usually 3–20%)"
    assert lines[2].endswith(" · id 3f9a2c1") and len(lines) == 3
    assert alert.params["reply_markup"] == {
        "inline_keyboard": [
            [
                {"text": "✅ Confirm", "callback_data": "c:3f9a2c1"},
                {"text": "❌ Dismiss", "callback_data": "d:3f9a2c1"},
                {"text": "🆕 New normal", "callback_data": "n:3f9a2c1"},
            ]
        ]
    }
    assert "reply_markup" not in resolve.params
    assert resolve.params["reply_parameters"]["message_id"] == 100
    assert resolve.params["text"].startswith("🟢 KIRI 3f9a2c RESOLVED pulse@vm: ")
    assert resolve.at - alert.at >= 0.95  # about one message a second in a chat
    with Store() as store:
        remembered = store.telegram_message("3f9a2c1")
    assert remembered is not None
    assert (remembered.chat, remembered.message, remembered.text) == (
        CHAT,
        100,
        alert.params["text"],
    )


def test_button_data_fits_in_64_bytes_or_the_alert_goes_without_buttons():
    for alert in ("3f9a2c1", "x" * 62):
        rows = keyboard(alert)
        data = [b["callback_data"] for b in rows["inline_keyboard"][0]] if rows else []
        assert all(len(d.encode()) <= 64 for d in data)
        assert [parse_press(d) for d in data] == [
            (alert, "confirm", False),
            (alert, "dismiss", False),
            (alert, "dismiss", True),
        ]
    assert keyboard("x" * 63) is None
    assert parse_press("z:3f9a2c1") is None and parse_press("d:") is None


def test_a_429_waits_as_long_as_telegram_asks_and_a_5xx_is_retried(telegram):
    fake = telegram
    fake.fail_next("sendMessage", 429, "Too Many Requests: retry after 1", retry_after=1)
    fake.fail_next("sendMessage", 502, "Bad Gateway")
    out, log = act(decision("a1"))
    assert [(r["kind"], r["ok"]) for r in out if r["kind"] == "outcome"] == [("outcome", True)]
    assert [e["error"] for e in log if e["event"] == "sink_failed"] == [
        "telegram sendMessage: HTTP 429 Too Many Requests: retry after 1",
        "telegram sendMessage: HTTP 502 Bad Gateway",
    ]
    first, second, third = (r.at for r in fake.calls("sendMessage"))
    assert 1.0 <= second - first < 1.5  # retry_after, not the 0.5 s backoff
    assert third - second >= 0.5
    assert len(fake.messages) == 1


def test_a_refused_message_is_an_outcome_with_the_reason_and_no_token(telegram):
    fake = telegram
    fake.fail_next("sendMessage", 400, "Bad Request: chat not found")
    out, log = act(decision("a1"))
    outcome = out[1]
    assert (outcome["ok"], outcome["error"], outcome["detail"]) == (
        False,
        "telegram sendMessage: HTTP 400 Bad Request: chat not found",
        "attempts: 1",
    )
    assert len(fake.calls("sendMessage")) == 1  # a refusal: not retried
    assert [e["error"] for e in log if e["event"] == "sink_failed"] == [outcome["error"]]


def send_fast(chats, seconds):
    """Send round the chats as fast as RateLimits allows (on a simulated clock), for `seconds`:
    when each message went."""
    now = [0.0]
    limits, times = RateLimits(clock=lambda: now[0]), []
    while now[0] < seconds:
        for chat in chats:
            now[0] += limits.wait(chat)
            limits.take(chat)
            times.append(now[0])
    return times


def most_in_a_window(times, window):
    return max(sum(1 for t in times if s <= t < s + window) for s in times)


def test_rate_limits_keep_to_telegrams_published_limits():
    private, group = send_fast([CHAT], 60), send_fast([-5], 180)
    for times in (private, group):
        assert all(b - a >= 1 - 1e-9 for a, b in pairwise(times))  # one a second
    assert len(private) == 61
    assert most_in_a_window(group, 60) <= 20 and len(group) >= 45  # 20 a minute, not fewer
    assert most_in_a_window(send_fast(range(1, 101), 3), 1) <= 30  # 30 a second in all


# -- the collector ----------------------------------------------------------------------------


def test_a_press_is_recorded_once_answered_and_its_message_edited(telegram):
    fake = telegram
    deliver(decision("a1"), decision("a2", incident="i2"))
    collector = Collector(fake, "--timeout", "5").polling()
    first = fake.press(ALICE, sent(fake, "a1"), "d:a1")
    wait_answers(fake, 1)
    fake.press(ALICE, sent(fake, "a1"), "d:a1")  # a double tap
    fake.press(ALICE, sent(fake, "a1"), "d:a1", query_id=first["callback_query"]["id"])  # resent
    fake.press(ALICE, sent(fake, "a2"), "n:a2")
    assert wait_answers(fake, 4) == [
        "Dismissed. Thank you!",
        "Already recorded.",
        "Already recorded.",
        "Dismissed as the new normal. Thank you!",
    ]
    fake.wait_for("both edits", lambda: len(fake.calls("editMessageText")) == 2)  # paced: 1/s
    records, log = collector.stop()
    assert verdicts() == [
        ("a1", "dismiss", False, "telegram", "@alice", ""),
        ("a2", "dismiss", True, "telegram", "@alice", "new normal"),
    ]
    assert [
        (r["kind"], r["alert"], r["verdict"], r["source"], r["by"], r["note"]) for r in records
    ] == [
        ("verdict", "a1", "dismiss", "telegram", "@alice", ""),
        ("verdict", "a2", "dismiss", "telegram", "@alice", "new normal"),
    ]
    one, two = sent(fake, "a1"), sent(fake, "a2")
    assert one["text"].endswith("id a1\n\nDismissed by @alice") and "reply_markup" not in one
    assert two["text"].endswith("\n\nDismissed as the new normal by @alice")
    assert "reply_markup" not in two
    assert [e["event"] for e in log if e["event"].startswith(("verdict", "press"))] == [
        "verdict_recorded",
        "press_repeated",
        "press_repeated",
        "verdict_recorded",
    ]


def test_a_stranger_is_refused_politely_and_nothing_is_recorded(telegram):
    fake = telegram
    with Store() as store:
        store.record_alert(decision("a1"), "C9")
    collector = Collector(fake, "--timeout", "5").polling()
    fake.press(MALLORY, {"message_id": 7, "chat": {"id": 666, "type": "private"}}, "d:a1")
    assert wait_answers(fake, 1) == ["Sorry, this KIRI does not take verdicts from you."]
    records, log = collector.stop()
    assert records == [] and verdicts() == []
    assert fake.calls("editMessageText") == []
    assert [(e["user"], e["chat"]) for e in log if e["event"] == "press_refused"] == [(666, 666)]


GROUP = -5005


@pytest.mark.parametrize(
    "allowed, counted",
    [
        ("", []),  # the default, [chat_id], is a group: no user's id
        (f"allowed_ids = [{CHAT}]", ["@alice"]),
        (f"allowed_ids = [{CHAT}]\nallowed_chats = [{GROUP}]", ["Mallory", "@alice"]),
    ],
)
def test_in_a_group_a_press_counts_from_an_allowed_user_not_from_any_member(
    telegram, kiri_home, allowed, counted
):
    fake = telegram
    write_config(
        kiri_home,
        f'token_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = {GROUP}\napi_url = "{fake.url}"\n{allowed}',
    )
    with Store() as store:
        store.record_alert(decision("a1"), "C9")
        store.record_alert(decision("a2", incident="i2"), "C9")
    collector = Collector(fake, "--timeout", "5").polling()
    in_group = {"message_id": 7, "chat": {"id": GROUP, "type": "group"}}
    fake.press(MALLORY, in_group, "d:a1")
    fake.press(ALICE, in_group, "c:a2")
    wait_answers(fake, 2)
    records, log = collector.stop()
    assert [r["by"] for r in records] == counted
    refused = [(e["user"], e["chat"]) for e in log if e["event"] == "press_refused"]
    assert len(refused) == 2 - len(counted) and all(chat == GROUP for _, chat in refused)


def test_the_offset_survives_a_restart_so_no_press_is_lost_or_replayed(telegram):
    fake = telegram
    deliver(decision("a1"), decision("a2", incident="i2"))
    collector = Collector(fake, "--timeout", "5").polling()
    a = fake.press(ALICE, sent(fake, "a1"), "c:a1")
    wait_answers(fake, 1)
    first, _ = collector.stop()
    b = fake.press(ALICE, sent(fake, "a2"), "d:a2")  # while nobody listens
    collector = Collector(fake, "--timeout", "5")
    wait_answers(fake, 2)
    second, _ = collector.stop()
    polls = fake.calls("getUpdates")
    assert polls[0].params["offset"] == 0  # nothing confirmed yet
    assert polls[collector.polls].params["offset"] == a["update_id"] + 1  # the restart's first
    assert all(p.params["allowed_updates"] == ["callback_query"] for p in polls)
    assert [r["alert"] for r in first] == ["a1"] and [r["alert"] for r in second] == ["a2"]
    assert [r.params["callback_query_id"] for r in fake.calls("answerCallbackQuery")] == [
        a["callback_query"]["id"],
        b["callback_query"]["id"],
    ]  # a1's press is not replayed
    assert [v[:2] for v in verdicts()] == [("a1", "confirm"), ("a2", "dismiss")]
    with Store() as store:
        assert store.get_state("telegram.offset.123456") == str(b["update_id"] + 1)


def test_an_absurd_update_id_is_rejected_so_later_presses_count_even_after_a_restart(telegram):
    fake = telegram
    deliver(decision("a1"), decision("a2", incident="i2"))
    collector = Collector(fake, "--timeout", "5").polling()
    bogus = {"update_id": 2**62, "callback_query": {"id": "q-bogus", "from": ALICE, "data": "d:a2"}}
    fake.queue(bogus, {"update_id": "x"}, {"update_id": 1.5})
    a = fake.press(ALICE, sent(fake, "a1"), "c:a1")
    assert wait_answers(fake, 1) == ["Confirmed. Thank you!"]  # the bogus press is not taken
    fake.wait_for("polls after it", lambda: len(fake.calls("getUpdates")) >= collector.polls + 3)
    _, log = collector.stop()
    assert [e["update_id"] for e in log if e["event"] == "bad_update_id"] == [
        str(2**62),
        "'x'",
        "1.5",
    ]  # each once, however often the server sends it again
    with Store() as store:
        assert store.get_state("telegram.offset.123456") == str(a["update_id"] + 1)
    collector = Collector(fake, "--timeout", "5").polling()
    fake.press(ALICE, sent(fake, "a2"), "d:a2")
    assert wait_answers(fake, 2) == ["Confirmed. Thank you!", "Dismissed. Thank you!"]
    collector.stop()
    assert [v[:2] for v in verdicts()] == [("a1", "confirm"), ("a2", "dismiss")]


def test_an_absurd_offset_saved_before_is_dropped_with_a_warning(telegram):
    fake = telegram
    deliver(decision("a1"))
    with Store() as store:  # what a version that took any update id may have left
        store.set_state("telegram.offset.123456", str(2**62 + 1))
    collector = Collector(fake, "--timeout", "5").polling()
    fake.press(ALICE, sent(fake, "a1"), "c:a1")
    assert wait_answers(fake, 1) == ["Confirmed. Thank you!"]
    _, log = collector.stop()
    assert [e["saved"] for e in log if e["event"] == "bad_offset"] == [str(2**62 + 1)]


def test_a_failed_poll_is_logged_and_polling_goes_on(telegram):
    fake = telegram
    fake.fail_next("getUpdates", 502, "Bad Gateway")
    collector = Collector(fake, "--timeout", "5")
    fake.wait_for("a second poll", lambda: len(fake.calls("getUpdates")) >= 2)
    fake.press(ALICE, {"message_id": 7, "chat": {"id": CHAT, "type": "private"}}, "d:zz9")
    assert wait_answers(fake, 1) == ["KIRI has no alert zz9 (yet): try again in a moment."]
    records, log = collector.stop()
    assert [(e["reason"], e["retry_in"]) for e in log if e["event"] == "poll_failed"] == [
        ("telegram getUpdates: HTTP 502 Bad Gateway", 1.0)
    ]
    assert records == [] and verdicts() == []


def test_sigterm_during_a_long_poll_stops_at_once_and_cleanly(telegram):
    collector = Collector(telegram, "--timeout", "30").polling()
    time.sleep(0.2)  # well inside the poll
    started = time.monotonic()
    records, log = collector.stop()
    assert time.monotonic() - started < 2
    assert records == []
    assert [e["event"] for e in log] == ["listening"]


def test_without_a_telegram_table_the_collector_says_so_and_asks_not_to_be_restarted(kiri_home):
    out = run("kiri.collect.stage", "telegram")
    assert out.returncode == 125 and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    assert json.loads(line)["event"] == "no_telegram"


@pytest.mark.parametrize(
    "stage", [("kiri.act.stage", "--sink", "telegram"), ("kiri.collect.stage", "telegram")]
)
@pytest.mark.parametrize(
    "config, status, error",
    [
        (
            'token_env = "KIRI_NO_SUCH_TOKEN"\nchat_id = 1',
            1,
            "config.toml: [telegram] token_env names $KIRI_NO_SUCH_TOKEN, which is not set",
        ),
        (
            'token_file = "{home}/token"\nchat_id = 1',
            1,
            "config.toml: [telegram] token_file {home}/token is readable by others (mode 644); "
            "chmod 600 it",
        ),
        (
            'token_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = 1\napi_url = "http://telegram.example"',
            2,
            "config.toml: [telegram] api_url 'http://telegram.example' would send the bot token "
            "unencrypted",
        ),
        (
            'token_env = "KIRI_MANGLED_TOKEN"\nchat_id = 1',
            1,
            "config.toml: [telegram] the bot token does not look like one from @BotFather",
        ),
        (
            'token_env = "KIRI_TELEGRAM_TOKEN"\nchat_id = 1\nallowed_id = [1]',
            2,
            "config.toml: [telegram] unknown key 'allowed_id' (did you mean 'allowed_ids'?)",
        ),
        (
            'token_env = "KIRI_TELEGRAM_TOKEN"',
            2,
            "config.toml: [telegram] missing required key 'chat_id'",
        ),
    ],
)
def test_bad_config_is_one_clear_error_line(stage, config, status, error, kiri_home, monkeypatch):
    monkeypatch.setenv("KIRI_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("KIRI_MANGLED_TOKEN", TOKEN.replace(":", "/"))
    write_config(kiri_home, config.format(home=kiri_home))
    (kiri_home / "token").write_text(TOKEN)
    (kiri_home / "token").chmod(0o644)
    out = run(*stage)
    assert out.returncode == status and out.stdout == b""
    [line] = out.stderr.decode().splitlines()
    assert line.startswith("Error: " + error.format(home=kiri_home)), line
    assert_no_token(line)


def test_a_token_telegram_refuses_stops_the_collector_with_the_reason(
    telegram, kiri_home, monkeypatch
):
    monkeypatch.setenv("KIRI_TELEGRAM_TOKEN", "654321:revoked")
    out = run("kiri.collect.stage", "telegram")
    assert out.returncode == 1 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [
        "Error: Telegram refused the bot token (telegram getMe: HTTP 401 Unauthorized): check "
        f"token_env or token_file in [telegram] of {kiri_home / 'config.toml'}"
    ]
    assert b"revoked" not in out.stderr


# -- the loop ---------------------------------------------------------------------------------

ACT = 'argv = ["kiri-act", "--sink", "log"]'


class TelegramLoop(Loop):
    """test_loop's supervised loop, alerting through Telegram and listening to its buttons."""

    def __init__(self, home, tmp_path):
        super().__init__(home, tmp_path)
        text = loop_pipeline(
            f'["kiri-collect", "replay", "{self.source}"]',
            extra_stages="""
[[stage]]
name = "telegram"
argv = ["kiri-collect", "telegram", "--timeout", "1"]
""",
        )
        assert ACT in text
        self.file.write_text(text.replace(ACT, ACT[:-1] + ', "--sink", "telegram"]'))


@pytest.fixture
def telegram_loop(telegram, installed_pulse, kiri_home, tmp_path):
    loop = TelegramLoop(kiri_home, tmp_path)
    loop.start()
    yield loop
    if loop.running():
        loop.stop()


def test_two_dismiss_presses_suppress_the_pattern_so_the_third_is_not_sent(
    telegram, telegram_loop, kiri_home
):
    fake, loop = telegram, telegram_loop
    for n in range(2):
        loop.occurrence(STRESS)
        alert = newest_alert(n + 1)
        assert alert.action == "alert"
        message = fake.wait_for("its message", lambda alert=alert: sent(fake, alert.id))
        assert "reply_markup" in message
        fake.press(ALICE, message, f"d:{alert.id}")
        fake.wait_for("the edit", lambda alert=alert: "reply_markup" not in sent(fake, alert.id))
    with Store() as store:
        wait_for("a suppression rule", store.active_rules)
    loop.said("decide", "rule_added")  # the rule travelled the FIFO to kiri-decide
    loop.occurrence(STRESS)
    assert newest_alert(3).action == "suppress"
    loop.stop()
    assert [r.action for r in recorded()] == ["alert", "alert", "suppress"]
    with_buttons = [c for c in fake.calls("sendMessage") if "reply_markup" in c.params]
    assert len(with_buttons) == 2  # the third occurrence never reached Telegram
    assert [v[1:5] for v in verdicts()] == [("dismiss", False, "telegram", "@alice")] * 2
    logs = list((kiri_home / "logs").glob("*.log"))
    assert {"act.log", "telegram.log"} <= {p.name for p in logs}
    for log in logs:
        assert_no_token(log.read_bytes())
