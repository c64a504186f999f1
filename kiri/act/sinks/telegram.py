"""The Telegram sink: alerts and resolves as messages in a chat, alerts with buttons.

Settings come from [telegram] in $KIRI_HOME/config.toml (kiri/clients/telegram.py); the bot
token only by reference (token_env or token_file), and it never appears in an outcome or a log
line, even when a malformed api_url makes a request fail with its URL quoted (BotAPI redacts
every error).

An alert is a plain-text message (its text as every sink tells it, kiri.wire.render.alert_text,
and its id) with three buttons: Confirm, Dismiss and New normal; `kiri-collect telegram` records
a press as a verdict and edits the message to show it. A resolve is a reply to the incident's
latest alert message, without buttons, so it shows up threaded under what it resolves. Each
message sent is remembered in the store (its chat and message id, and its text), which is what
lets the buttons and the resolves find it.

Each delivery is one request; kiri-act retries a failed one (--retries) when the failure is
transient (no answer, 429, 5xx), after the retry_after a 429 asks for, and at once reports a
refusal (any other 4xx) without trying again. Messages are paced to Telegram's rate limits, a
second at most in a private chat, a few in a busy group, waiting with kiri-act's own sleep, so
a stop signal cuts the wait short.
"""

from __future__ import annotations

import argparse
import sqlite3
import time
from collections.abc import Callable

from kiri.act.sinks import Sink, SinkError
from kiri.clients.http import HttpError
from kiri.clients.telegram import (
    BotAPI,
    TelegramSettings,
    keyboard,
    message_text,
    telegram_settings,
)
from kiri.home.config import config_path
from kiri.home.store import Store, StoreError, TelegramMessage
from kiri.wire.log import Log
from kiri.wire.records import Decision


class TelegramSink(Sink):
    name = "telegram"

    def __init__(self, config: TelegramSettings, log: Log) -> None:
        self.chat, self.log = config.chat_id, log
        self.api = BotAPI(config)
        self.secrets = self.api.secrets
        try:
            self.store = Store()
        except (StoreError, sqlite3.Error) as e:
            raise SinkError(f"cannot open the store: {e}") from e

    def wait_with(self, sleep: Callable[[float], bool]) -> None:
        self.api.sleep = sleep

    def deliver(self, decision: Decision, line: bytes) -> str:
        text = message_text(decision)
        params = {"chat_id": self.chat, "text": text, **self._extras(decision)}
        try:
            sent = self.api.send("sendMessage", params)
            if not isinstance(sent, dict):
                raise TypeError("the answer is not an object")
            message = int(sent["message_id"])
        except HttpError as e:
            raise SinkError.from_http(e) from None
        except (TypeError, KeyError, ValueError):  # sent, most likely: do not send it again
            raise SinkError(
                "telegram sendMessage: the answer has no message_id", retry=False
            ) from None
        self._remember(decision, message, text)
        return f"message {message} in chat {self.chat}"

    def _extras(self, decision: Decision) -> dict[str, object]:
        """An alert's buttons, or the message a resolve replies to."""
        if decision.action == "alert":
            buttons = keyboard(decision.id)
            if buttons is None:
                self.log.warning(
                    "telegram_no_buttons",
                    id=decision.id,
                    reason="the alert id is too long for a button's data",
                )
                return {}
            return {"reply_markup": buttons}
        thread = self.store.telegram_thread(decision.incident) if decision.incident else None
        if thread is None or thread.chat != self.chat:
            return {}
        return {
            "reply_parameters": {"message_id": thread.message, "allow_sending_without_reply": True}
        }

    def _remember(self, decision: Decision, message: int, text: str) -> None:
        """Keep the message for the buttons and resolves. The message is out: failing here
        must not fail the delivery, or a retry would send it twice."""
        try:
            self.store.record_telegram_message(
                TelegramMessage(
                    alert=decision.id,
                    incident=decision.incident,
                    action=decision.action,
                    chat=self.chat,
                    message=message,
                    text=text,
                    ts=time.time(),
                )
            )
        except (StoreError, sqlite3.Error) as e:
            self.log.warning(
                "telegram_not_remembered", id=decision.id, message=message, reason=str(e)
            )

    def close(self) -> None:
        self.store.close()


HELP = (
    "a Telegram chat ([telegram] in config.toml): alerts with Confirm, Dismiss and "
    "New normal buttons, resolves as replies"
)


def open_sink(args: argparse.Namespace, log: Log) -> TelegramSink:
    config = telegram_settings()
    if config is None:
        raise SinkError(
            f"--sink telegram needs a [telegram] table in {config_path()} "
            f"(token_env or token_file, and chat_id)"
        )
    return TelegramSink(config, log)
