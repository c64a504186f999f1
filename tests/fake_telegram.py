"""A fake Telegram Bot API server on 127.0.0.1, for the Telegram sink and collector.

It speaks the documented shapes: POST /bot<token>/METHOD with a JSON body (or GET with a query
string), answers `{"ok": true, "result": ...}` or `{"ok": false, "error_code": N,
"description": ..., "parameters": {...}}`. It keeps the chats' messages, queues updates for
getUpdates (a long poll that waits up to `timeout` seconds; updates below `offset` are confirmed
and dropped) and records every request. Tests inject button presses with `press`, and failures
with `fail_next`.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

BOT = {"id": 4242, "is_bot": True, "first_name": "KIRI", "username": "kiri_test_bot"}


@dataclass
class Request:
    at: float  # time.monotonic() when it arrived
    method: str
    params: dict[str, Any]


@dataclass
class FakeTelegram:
    token: str
    requests: list[Request] = field(default_factory=list)
    messages: dict[tuple[int, int], dict] = field(default_factory=dict)  # (chat, id) -> message
    updates: list[dict] = field(default_factory=list)
    failures: dict[str, list[tuple[int, dict]]] = field(default_factory=dict)
    next_message_id: int = 100
    next_update_id: int = 500_000
    next_query_id: int = 1
    closed: bool = False
    changed: threading.Condition = field(default_factory=threading.Condition)

    def start(self) -> FakeTelegram:
        fake = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._serve(json.loads(body) if body else {})

            def do_GET(self) -> None:
                query = urllib.parse.urlsplit(self.path).query
                self._serve({k: _value(v) for k, v in urllib.parse.parse_qsl(query)})

            def _serve(self, params: dict) -> None:
                status, answer = fake.handle(urllib.parse.urlsplit(self.path).path, params)
                body = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up on a long poll (a stopped collector)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def close(self) -> None:
        with self.changed:
            self.closed = True
            self.changed.notify_all()
        self.server.shutdown()
        self.server.server_close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    # -- what tests do ----------------------------------------------------------------------

    def fail_next(
        self, method: str, status: int, description: str, retry_after: int | None = None
    ) -> None:
        """Answer the next call of `method` with this error (queued: several in a row)."""
        answer = {"ok": False, "error_code": status, "description": description}
        if retry_after is not None:
            answer["parameters"] = {"retry_after": retry_after}
        self.failures.setdefault(method, []).append((status, answer))

    def press(self, user: dict, message: dict, data: str, query_id: str | None = None) -> dict:
        """A person presses a button of `message`: a callback_query update, queued."""
        if query_id is None:
            query_id, self.next_query_id = str(self.next_query_id), self.next_query_id + 1
        with self.changed:
            update = {
                "update_id": self.next_update_id,
                "callback_query": {
                    "id": query_id,
                    "from": user,
                    "chat_instance": "77",
                    "message": message,
                    "data": data,
                },
            }
            self.next_update_id += 1
            self.updates.append(update)
            self.changed.notify_all()
        return update

    def queue(self, *updates: dict) -> None:
        """Updates as a broken or hostile server might send them, queued as they are."""
        with self.changed:
            self.updates += updates
            self.changed.notify_all()

    def calls(self, method: str) -> list[Request]:
        return [r for r in self.requests if r.method == method]

    def wait_for(self, what: str, predicate: Any, timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not (result := predicate()):
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self.changed.wait(left)
        return result

    # -- the Bot API --------------------------------------------------------------------------

    def handle(self, path: str, params: dict) -> tuple[int, dict]:
        prefix = f"/bot{self.token}/"
        if not path.startswith(prefix):
            return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}
        method = path[len(prefix) :]
        with self.changed:
            self.requests.append(Request(time.monotonic(), method, params))
            self.changed.notify_all()
            if self.failures.get(method):
                return self.failures[method].pop(0)
        serve = self._served().get(method)
        if serve is None:
            return 404, {"ok": False, "error_code": 404, "description": "Not Found"}
        try:
            return 200, {"ok": True, "result": serve(params)}
        except BadRequestError as e:
            return 400, {"ok": False, "error_code": 400, "description": f"Bad Request: {e}"}

    def _served(self) -> dict[str, Callable[[dict], Any]]:
        """The Bot API methods this fake answers, by name."""
        return {
            "getMe": self._get_me,
            "sendMessage": self._send_message,
            "getUpdates": self._get_updates,
            "answerCallbackQuery": self._answer_callback_query,
            "editMessageText": self._edit_message_text,
            "editMessageReplyMarkup": self._edit_message_reply_markup,
        }

    def _get_me(self, params: dict) -> dict:
        return BOT

    def _send_message(self, p: dict) -> dict:
        if not p.get("text"):
            raise BadRequestError("message text is empty")
        if len(p["text"]) > 4096:
            raise BadRequestError("message is too long")
        with self.changed:
            message = {
                "message_id": self.next_message_id,
                "date": int(time.time()),
                "chat": {"id": p["chat_id"], "type": "private" if p["chat_id"] > 0 else "group"},
                "from": BOT,
                "text": p["text"],
            }
            if "reply_markup" in p:
                message["reply_markup"] = p["reply_markup"]
            if "reply_parameters" in p:
                message["reply_to_message"] = self.messages[
                    (p["chat_id"], p["reply_parameters"]["message_id"])
                ]
            self.messages[(p["chat_id"], message["message_id"])] = message
            self.next_message_id += 1
            self.changed.notify_all()
        return message

    def _get_updates(self, p: dict) -> list[dict]:
        offset, deadline = p.get("offset", 0), time.monotonic() + p.get("timeout", 0)
        with self.changed:
            self.updates = [u for u in self.updates if not _before(u["update_id"], offset)]
            while not self.updates and not self.closed and time.monotonic() < deadline:
                self.changed.wait(deadline - time.monotonic())
            return list(self.updates[: p.get("limit", 100)])

    def _answer_callback_query(self, p: dict) -> bool:
        if "callback_query_id" not in p:
            raise BadRequestError(
                "query is too old and response timeout expired or query ID is invalid"
            )
        return True

    def _edit_message_text(self, p: dict) -> dict:
        with self.changed:
            message = self._message_to_edit(p)
            if message["text"] == p["text"] and message.get("reply_markup") == p.get(
                "reply_markup"
            ):
                raise BadRequestError("message is not modified")
            message["text"] = p["text"]
            _set_keyboard(message, p)
            self.changed.notify_all()
        return message

    def _edit_message_reply_markup(self, p: dict) -> dict:
        with self.changed:
            message = self._message_to_edit(p)
            _set_keyboard(message, p)
        return message

    def _message_to_edit(self, p: dict) -> dict:
        message = self.messages.get((p.get("chat_id", 0), p.get("message_id", 0)))
        if message is None:
            raise BadRequestError("message to edit not found")
        return message


class BadRequestError(Exception):
    pass


def _value(text: str) -> Any:
    """A query-string value as the Bot API reads it: JSON where it parses, else the text."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _before(update_id: object, offset: int) -> bool:
    """Whether getUpdates at `offset` confirms an update: one whose id is not even a number is
    never confirmed, and is sent again and again."""
    return isinstance(update_id, int) and update_id < offset


def _set_keyboard(message: dict, p: dict) -> None:
    """An edit without a keyboard removes the message's keyboard."""
    message.pop("reply_markup", None)
    if p.get("reply_markup", {}).get("inline_keyboard"):
        message["reply_markup"] = p["reply_markup"]
