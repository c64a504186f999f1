"""Telegram's Bot API as KIRI uses it: the [telegram] settings, a small client, the alert
messages and their buttons, and Telegram's rate limits.

Shared by the Telegram sink (`kiri-act --sink telegram`), which sends alerts with Confirm,
Dismiss and New normal buttons, and `kiri-collect telegram`, which turns presses of those
buttons into verdicts.

    [telegram]
    token_env = "KIRI_TELEGRAM_TOKEN"    # or token_file = "~/.kiri/telegram-token" (mode 0600)
    chat_id = 123456789                   # where alerts go
    allowed_ids = [123456789]             # users whose presses count (default: chat_id)
    allowed_chats = []                    # chats where anyone's press counts (default: none)
    api_url = "https://api.telegram.org"  # the Bot API server

The bot token is part of every request's URL path (`/bot<token>/METHOD`), so it only ever goes
into a URL here: requests are named by their method alone (`telegram sendMessage`) in errors and
logs, every error is redacted of the token (and of api_url's userinfo and path: BotAPI.secrets),
and the token is left out of the settings' repr. Plain http:// is accepted for a loopback
address only (a local Bot API server, or a fake one in tests); anywhere else it would carry the
token in the clear. The section is declared, and checked, with the others in kiri/home/config.py.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Callable, Mapping

import msgspec

from kiri.clients.http import HttpError, post_json, retrying
from kiri.home.config import ConfigError, TelegramSection, load_config, secret
from kiri.wire.records import Decision
from kiri.wire.redact import redact, url_secrets
from kiri.wire.render import alert_lines

TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]+$")  # what @BotFather hands out
MAX_TEXT = 3000  # characters of an alert's text in a message; Telegram takes 4096 in all
MAX_CALLBACK_DATA = 64  # bytes, Telegram's limit for a button's data

# A button's data is CODE:ALERT; the codes and what each press means (verdict, new normal).
BUTTONS = (("c", "✅ Confirm"), ("d", "❌ Dismiss"), ("n", "🆕 New normal"))
PRESSES = {"c": ("confirm", False), "d": ("dismiss", False), "n": ("dismiss", True)}
NEW_NORMAL = "new normal"  # the note of a New normal press
MARKS = {"info": "🔵", "warning": "🟠", "critical": "🔴"}  # an alert's, by severity


# -- settings ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TelegramSettings:
    token: str = dataclasses.field(repr=False)
    chat_id: int
    allowed_ids: frozenset[int]  # users
    allowed_chats: frozenset[int]
    api_url: str

    @property
    def bot_id(self) -> str:
        """The bot's own user id: the token's public part, before the colon."""
        return self.token.split(":", 1)[0]


def telegram_settings() -> TelegramSettings | None:
    """The [telegram] settings of config.toml, with the bot token read; None when there is no
    [telegram] table."""
    section = load_config().telegram
    if section is None:
        return None
    allowed = section.allowed_ids if section.allowed_ids is not None else [section.chat_id]
    return TelegramSettings(
        _token(section),
        section.chat_id,
        frozenset(allowed),
        frozenset(section.allowed_chats),
        section.api_url,
    )


def _token(section: TelegramSection) -> str:
    token = secret("[telegram]", "token", section.token_env, section.token_file)
    if token is None:  # config.toml's check says so already
        raise ConfigError("config.toml: [telegram] no bot token: give token_env or token_file")
    if not TOKEN.match(token):  # said without the token, which may be a real one mistyped
        raise ConfigError(
            "config.toml: [telegram] the bot token does not look like one from @BotFather "
            "(digits, a colon, letters)"
        )
    return token


# -- the client -------------------------------------------------------------------------------


class BotAPI:
    """Calls to the Bot API as one bot. Requests that post into a chat are paced to
    Telegram's limits; `sleep` waits (a stage's own, so a stop signal cuts a wait short)."""

    def __init__(
        self,
        config: TelegramSettings,
        *,
        timeout: float = 10.0,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self._base = f"{config.api_url}/bot{config.token}/"
        self.secrets = (config.token, *url_secrets(config.api_url))  # never in an error
        self.timeout, self.sleep = timeout, sleep
        self.limits = RateLimits()

    def call(
        self, method: str, params: Mapping[str, object], *, timeout: float | None = None
    ) -> object:
        """One request; its `result`, as JSON decodes it. HttpError, named `telegram METHOD`,
        when it fails."""
        name = f"telegram {method}"
        answer: object = post_json(
            self._base + method,
            params,
            timeout=timeout or self.timeout,
            name=name,
            secrets=self.secrets,
        ).json()
        if not isinstance(answer, dict):
            raise HttpError(f"{name}: the answer is not a JSON object")
        if answer.get("ok") is not True:  # an error with a 200 status: take its own code
            code = answer.get("error_code")
            reason = str(answer.get("description") or "the answer is not ok")
            raise HttpError(
                f"{name}: {redact(reason, self.secrets)}",
                code if isinstance(code, int) else 0,
            )
        result: object = answer.get("result")
        return result

    def send(self, method: str, params: Mapping[str, object], *, attempts: int = 1) -> object:
        """call(), paced when it posts into a chat; with attempts > 1, retried with backoff
        while it fails transiently (a 429's retry_after is the wait)."""

        def attempt() -> object:
            chat = params.get("chat_id")
            if isinstance(chat, int) and not self._pace(chat):
                raise HttpError(f"telegram {method}: stopped while waiting for the rate limit")
            return self.call(method, params)

        return retrying(attempt, attempts=attempts, sleep=self.sleep)

    def _pace(self, chat: int) -> bool:
        """Wait until a message may go to `chat`; False when the wait was cut short."""
        while (wait := self.limits.wait(chat)) > 0:
            if self.sleep(wait) is False:
                return False
        self.limits.take(chat)
        return True


class TokenBucket:
    """`burst` tokens at most, refilled at `rate` per second; one per message."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float]) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens, self.at = burst, clock()

    def wait(self) -> float:
        """Seconds until a token is there."""
        self._fill()
        return max(0.0, (1 - self.tokens) / self.rate)

    def take(self) -> None:
        self._fill()
        self.tokens -= 1

    def _fill(self) -> None:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now


class RateLimits:
    """Telegram's published limits for a bot: about one message a second in a chat, 20 a
    minute in a group (a negative chat id), 30 a second in all. A bucket lets through at most
    its burst plus what refills in a window, so the group and overall buckets split their
    limit: a few at once, then the rest of the window's share at an even pace."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.overall = TokenBucket(25, 5, clock)  # at most 30 in any second
        self.chats: dict[int, list[TokenBucket]] = {}

    def wait(self, chat: int) -> float:
        return max(b.wait() for b in self._buckets(chat))

    def take(self, chat: int) -> None:
        for bucket in self._buckets(chat):
            bucket.take()

    def _buckets(self, chat: int) -> list[TokenBucket]:
        if chat not in self.chats:
            self.chats[chat] = [TokenBucket(1, 1, self.clock)]  # one a second
            if chat < 0:  # at most 20 in any minute
                self.chats[chat].append(TokenBucket(15 / 60, 5, self.clock))
        return [self.overall, *self.chats[chat]]


# -- updates: what getUpdates answers (only what KIRI reads of it) ----------------------------


class User(msgspec.Struct):
    id: int
    first_name: str = ""
    username: str = ""


class Chat(msgspec.Struct):
    id: int


class Message(msgspec.Struct):
    message_id: int
    chat: Chat


class CallbackQuery(msgspec.Struct):
    id: str
    sender: User = msgspec.field(name="from")
    message: Message | None = None  # absent for a message sent in inline mode
    data: str = ""


class Update(msgspec.Struct):
    update_id: int
    callback_query: CallbackQuery | None = None


def who(user: User) -> str:
    """How a verdict names the person who pressed: @username, else their first name."""
    return f"@{user.username}" if user.username else user.first_name or f"user {user.id}"


# -- messages ---------------------------------------------------------------------------------


def message_text(d: Decision) -> str:
    """An alert or resolve as plain text (no parse mode: nothing in a record is markup)."""
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(d.ts))
    mark = MARKS.get(d.severity, "🔴") if d.action == "alert" else "🟢"
    text = "\n".join(alert_lines(d))[:MAX_TEXT]  # cut here, so the id line always fits
    return _plain(f"{mark} KIRI {text}\n{when} · id {d.id}")


def _plain(text: str) -> str:
    """Text without control characters (other than newlines), which Telegram may refuse."""
    return "".join(c if c.isprintable() or c == "\n" else " " for c in text)


def keyboard(alert: str) -> dict[str, list[list[dict[str, str]]]] | None:
    """The Confirm / Dismiss / New normal buttons of an alert; None when its id is too long
    to fit in a button's data."""
    row = [{"text": label, "callback_data": f"{code}:{alert}"} for code, label in BUTTONS]
    if any(len(b["callback_data"].encode()) > MAX_CALLBACK_DATA for b in row):
        return None
    return {"inline_keyboard": [row]}


def parse_press(data: str) -> tuple[str, str, bool] | None:
    """(alert, verdict, new normal) from a button's data; None when it is not KIRI's."""
    code, _, alert = data.partition(":")
    if code not in PRESSES or not alert:
        return None
    return (alert, *PRESSES[code])


def verdict_words(verdict: str, normal: bool) -> str:
    if normal:
        return "Dismissed as the new normal"
    return "Confirmed" if verdict == "confirm" else "Dismissed"


def judged_text(text: str, verdict: str, normal: bool, by: str) -> str:
    """An alert's message once judged: its text, and the verdict and who gave it."""
    return f"{text}\n\n{verdict_words(verdict, normal)} by {_plain(by)}"
