"""kiri-collect telegram: presses of the buttons on Telegram alerts, as verdicts.

The Telegram sink (kiri/act/sinks/telegram.py) sends each alert with Confirm, Dismiss and New
normal buttons. This source long-polls the Bot API's getUpdates for presses and, for each one:

* from a user not in allowed_ids ([telegram] in config.toml), unless it was pressed in a chat
  of allowed_chats: answers with a polite refusal and logs it, records nothing (in a group
  chat, being a member is not enough);
* otherwise records the verdict in the store, where kiri-feedback picks it up (New normal is a
  dismissal with the normal flag, as `kiri feedback dismiss ID --normal`), emits it as a
  `verdict` record, answers the press, and edits the message to show the verdict and who gave
  it, without the buttons;
* a press on an alert that already has that verdict records nothing and is answered "already
  recorded".

The offset of the next update is kept in the store's state (per bot) and moved past each update
once it is handled, so a restart neither loses nor replays presses. Update ids go up by one per
update: one that is not a whole number, is negative, lies beyond 2^53 or more than 2^31 ahead of
the offset is no real one, and is rejected with a warning, the offset left where it is (moving
it there would make every later press look old, for good). A long poll is waited for
in a worker thread, so a stop signal ends the source at once, whatever the poll's --timeout;
the updates it was fetching are simply fetched again next time. Without a [telegram] table
there is nothing to listen to: one log line and exit status 125, so a supervisor leaves it
stopped. A failed poll is logged with its reason and polling goes on after a backoff.
"""

from __future__ import annotations

import argparse
import threading
import time

import msgspec

from kiri.clients.http import HttpError
from kiri.clients.telegram import (
    NEW_NORMAL,
    BotAPI,
    CallbackQuery,
    TelegramSettings,
    Update,
    judged_text,
    parse_press,
    telegram_settings,
    verdict_words,
    who,
)
from kiri.home.config import config_path
from kiri.home.store import Store, UnknownAlertError
from kiri.wire.backoff import Backoff
from kiri.wire.errors import DO_NOT_RESTART, KiriError
from kiri.wire.records import Verdict
from kiri.wire.stream import Stream

ATTEMPTS = 3  # of an answer or an edit, retried while it fails transiently
FIRST_BACKOFF = 1.0  # seconds after a failed poll, doubled while polls keep failing
POLL_SLACK = 10.0  # seconds a long poll's request may take beyond the poll's own timeout
STOP_CHECK = 0.1  # seconds between looks at the stop flag while a long poll is out
MAX_UPDATE_ID = 2**53  # beyond it JSON numbers lose their precision
MAX_JUMP = 2**31  # Telegram's update ids fit in 32 bits: no real one is further ahead
REJECTED_KEPT = 100  # rejected update ids remembered, so that each is warned about once
REFUSED = "Sorry, this KIRI does not take verdicts from you."


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "telegram",
        help="verdicts from the Confirm / Dismiss / New normal "
        "buttons of Telegram alerts ([telegram] in config.toml)",
    )
    p.add_argument(
        "--timeout",
        type=int,
        default=30,
        metavar="S",
        help="seconds each long poll of Telegram waits for a press (default 30)",
    )
    p.set_defaults(collect=collect)
    return p


def collect(args: argparse.Namespace, stream: Stream) -> None:
    config = telegram_settings()
    if config is None:
        stream.log.warning(
            "no_telegram",
            reason=f"no [telegram] in {config_path()}: no buttons to listen to, not restarting",
        )
        raise SystemExit(DO_NOT_RESTART)
    if args.timeout < 1:
        raise KiriError("--timeout must be at least 1 second")
    with Store() as store:
        Presses(config, store, stream, args.timeout).run()


class Presses:
    """The poll loop, and what each press becomes."""

    def __init__(
        self, config: TelegramSettings, store: Store, stream: Stream, timeout: int
    ) -> None:
        self.allowed, self.allowed_chats = config.allowed_ids, config.allowed_chats
        self.store, self.stream, self.log = store, stream, stream.log
        self.api = BotAPI(config, sleep=stream.sleep)
        self.timeout = timeout
        self.offset_key = f"telegram.offset.{config.bot_id}"  # update ids are per bot
        self.offset = self._saved_offset()
        self.rejected: set[str] = set()

    def run(self) -> None:
        self._introduce()
        backoff = Backoff(FIRST_BACKOFF)
        while not self.stream.stopping:
            try:
                updates = self._long_poll()
            except HttpError as e:
                wait = backoff.failed(str(e), e.retry_after)
                self.log.warning("poll_failed", reason=str(e), retry_in=wait)
                self.stream.sleep(wait)
                continue
            backoff.succeeded()
            handled = [self._handle(update) for update in updates or ()]
            if handled and not any(handled):  # Telegram sends them again: not at once, then
                self.stream.sleep(FIRST_BACKOFF)

    def _saved_offset(self) -> int:
        """The offset kept in the store; 0 (with a warning) when what is kept is no offset."""
        saved = self.store.get_state(self.offset_key, "0")
        try:
            offset = int(saved)
        except ValueError:
            offset = -1
        if not 0 <= offset <= MAX_UPDATE_ID + 1:
            self.log.warning("bad_offset", saved=saved[:64], reason="not an update id: from 0")
            return 0
        return offset

    def _introduce(self) -> None:
        """Check the token once at start: a refused one is an error, an unreachable Telegram
        only a warning (the poll loop will keep trying)."""
        try:
            me = self.api.call("getMe", {})
        except HttpError as e:
            if e.status in (401, 404):
                raise KiriError(
                    f"Telegram refused the bot token ({e}): check token_env or "
                    f"token_file in [telegram] of {config_path()}"
                ) from None
            self.log.warning("telegram_unreachable", reason=str(e))
            return
        username = me.get("username", "") if isinstance(me, dict) else ""
        self.log.info(
            "listening",
            bot=username,
            allowed=sorted(self.allowed),
            allowed_chats=sorted(self.allowed_chats),
            offset=self.offset,
        )

    def _long_poll(self) -> list[object] | None:
        """getUpdates after the offset; None when the stage is stopping meanwhile."""
        params = {
            "offset": self.offset,
            "timeout": self.timeout,
            "allowed_updates": ["callback_query"],
        }
        answer: list[object] = []  # the updates, or what went wrong

        def fetch() -> None:
            try:
                answer.append(
                    self.api.call("getUpdates", params, timeout=self.timeout + POLL_SLACK)
                )
            except Exception as e:  # handed to the main thread, which decides
                answer.append(e)

        worker = threading.Thread(target=fetch, name="getUpdates", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(STOP_CHECK)
            if self.stream.stopping:
                return None  # the worker is left to die with the process
        if isinstance(answer[0], Exception):
            raise answer[0]
        if not isinstance(answer[0], list):
            raise HttpError("telegram getUpdates: the answer is not a list of updates")
        return answer[0]

    def _handle(self, raw: object) -> bool:
        """One update, then the offset moves past it: it is never handled again. False when
        its id is rejected: nothing is done with it, and the offset stays."""
        update_id = self._update_id(raw)
        if update_id is None:
            return False
        try:
            update = msgspec.convert(raw, Update)
        except msgspec.ValidationError as e:
            self.log.warning("bad_update", reason=str(e))
            if update_id >= self.offset:
                self._advance(update_id)
            return True
        if update.update_id < self.offset:
            return True  # confirmed before: Telegram sent it again
        if update.callback_query:
            self._press(update.callback_query)
        self._advance(update.update_id)
        return True

    def _update_id(self, raw: object) -> int | None:
        """The update's id; None when it cannot be a real one (warned about once)."""
        update_id = raw.get("update_id") if isinstance(raw, dict) else None
        highest = min(MAX_UPDATE_ID, self.offset + MAX_JUMP)
        if (
            isinstance(update_id, int)
            and not isinstance(update_id, bool)
            and 0 <= update_id <= highest
        ):
            return update_id
        key = repr(update_id)[:64]
        if key not in self.rejected:
            if len(self.rejected) >= REJECTED_KEPT:
                self.rejected.clear()
            self.rejected.add(key)
            self.log.warning(
                "bad_update_id",
                update_id=key,
                offset=self.offset,
                reason="not a whole number from 0 to 2^53, at most 2^31 ahead of the offset",
            )
        return None

    def _advance(self, update_id: int) -> None:
        self.offset = update_id + 1
        self.store.set_state(self.offset_key, str(self.offset))

    def _press(self, q: CallbackQuery) -> None:
        chat = q.message.chat.id if q.message else None
        if q.sender.id not in self.allowed and chat not in self.allowed_chats:
            self.log.warning(
                "press_refused",
                user=q.sender.id,
                chat=chat,
                reason="not in allowed_ids, nor pressed in a chat of allowed_chats",
            )
            self._answer(q, REFUSED)
            return
        press = parse_press(q.data)
        if press is None:
            self.log.warning("unknown_button", user=q.sender.id, data=q.data[:64])
            self._answer(q, "KIRI does not know this button.")
            return
        alert, verdict, normal = press
        by = who(q.sender)
        try:
            recorded = self.store.add_verdict(
                alert,
                verdict,
                normal=normal,
                source="telegram",
                by=by,
                note=NEW_NORMAL if normal else "",
            )
        except UnknownAlertError:
            self.log.warning("unknown_alert", alert=alert, user=q.sender.id)
            self._answer(q, f"KIRI has no alert {alert} (yet): try again in a moment.")
            return
        if not recorded:
            self.log.info("press_repeated", alert=alert, verdict=verdict, user=q.sender.id)
            self._answer(q, "Already recorded.")
            return
        self.stream.emit(
            Verdict(
                ts=time.time(),
                alert=alert,
                verdict=verdict,
                source="telegram",
                by=by,
                note=NEW_NORMAL if normal else "",
                normal=normal,
            )
        )
        self.stream.flush()
        self.log.info(
            "verdict_recorded", alert=alert, verdict=verdict, normal=normal, user=q.sender.id
        )
        self._answer(q, f"{verdict_words(verdict, normal)}. Thank you!")
        self._show(alert, verdict, normal, by)

    def _answer(self, q: CallbackQuery, text: str) -> None:
        """Answer a press (it stops the button's spinner); a failure is only logged."""
        try:
            self.api.send(
                "answerCallbackQuery", {"callback_query_id": q.id, "text": text}, attempts=ATTEMPTS
            )
        except HttpError as e:
            self.log.warning("answer_failed", reason=str(e))

    def _show(self, alert: str, verdict: str, normal: bool, by: str) -> None:
        """Edit the alert's message: the verdict and who gave it, and no more buttons."""
        sent = self.store.telegram_message(alert)
        if sent is None:
            self.log.warning("edit_skipped", alert=alert, reason="no message of it in the store")
            return
        try:
            self.api.send(
                "editMessageText",
                {
                    "chat_id": sent.chat,
                    "message_id": sent.message,
                    "text": judged_text(sent.text, verdict, normal, by),
                    "reply_markup": {"inline_keyboard": []},
                },
                attempts=ATTEMPTS,
            )
        except HttpError as e:
            self.log.warning("edit_failed", alert=alert, reason=str(e))
