"""The webhook sink: POST each alert and resolve, as the decision's own JSON, to a URL of yours.

    [webhook]
    url = "https://hooks.example.org/kiri"
    secret_env = "KIRI_WEBHOOK_SECRET"   # or secret_file = "~/.kiri/webhook.secret" (0600)
    timeout = 10                          # seconds to wait for the receiver (default 10)

The body is the decision record exactly as kiri-act read it (one JSON object, no newline) with
one field added at its end: `text`, the alert as people read it on every sink
(kiri.wire.render.alert_text, each line starting with the alert's short id). It goes with
`Content-Type: application/json`, `User-Agent: kiri/VERSION` and `Idempotency-Key: <decision
id>`: the same on every attempt, so a receiver that saw a delivery already can drop the repeat.
With a secret, `X-Kiri-Signature: sha256=<hex>` is the HMAC-SHA256 of the exact body bytes under
the secret; a receiver recomputes it over the body it received and compares in constant time.

kiri-act retries a failed delivery with backoff. Worth retrying are no answer (refused, timed
out) and 408, 425, 429 and 5xx; any other status is the receiver saying no, so it fails at once
with the receiver's reason, and kiri-act does not try again (a 429's Retry-After sets its next
wait). Messages name the receiver by its host only: a webhook URL's
path often holds a token, so its path, query and userinfo are redacted from every error, as the
secret is, which goes into the signature and nowhere else.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import urllib.parse

import msgspec

from kiri import version
from kiri.act.sinks import Sink, SinkError
from kiri.clients.http import HttpError, request
from kiri.home.config import ConfigError, config_path, load_config, secret
from kiri.wire.records import Decision
from kiri.wire.redact import url_secrets
from kiri.wire.render import alert_text


class WebhookSink(Sink):
    name = "webhook"

    def __init__(self, url: str, key: str | None, timeout: float) -> None:
        self.url, self.key, self.timeout = url, key, timeout
        self.secrets = (*url_secrets(url), *([key] if key else []))
        self.where = f"POST to {urllib.parse.urlsplit(url).netloc.rpartition('@')[2]}"

    def deliver(self, decision: Decision, line: bytes) -> str:
        body = with_text(line, decision)
        try:
            answer = request(
                "POST",
                self.url,
                body=body,
                headers=self.headers(decision, body),
                timeout=self.timeout,
                name=self.where,
                secrets=self.secrets,
            )
        except HttpError as e:
            raise SinkError.from_http(e) from None
        return f"{self.where}: HTTP {answer.status}"

    def headers(self, decision: Decision, body: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"kiri/{version()}",
            "Idempotency-Key": decision.id,
        }
        if self.key is not None:
            headers["X-Kiri-Signature"] = "sha256=" + signature(self.key, body)
        return headers


def with_text(line: bytes, decision: Decision) -> bytes:
    """The decision's line, its every byte kept, with `text` added as its last field."""
    record = line.rstrip()
    if not record.endswith(b"}"):  # kiri-act decoded it, so it is an object; a guard all the same
        return record
    return record[:-1] + b',"text":' + msgspec.json.encode(alert_text(decision)) + b"}"


def signature(key: str, body: bytes) -> str:
    """The hex HMAC-SHA256 of `body` under `key`: what a receiver recomputes to check it."""
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def settings() -> tuple[str, str | None, float]:
    """The receiver's URL, the signing secret (None: unsigned) and the timeout, from
    [webhook] in config.toml."""
    section = load_config().webhook
    if section is None:
        raise ConfigError(f'--sink webhook needs url = "https://…" in [webhook] of {config_path()}')
    key = secret("[webhook]", "secret", section.secret_env, section.secret_file)
    return section.url, key, section.timeout


HELP = "POST the decision's JSON to [webhook] url of config.toml, HMAC-signed with its secret"


def open_sink(args: argparse.Namespace, log: object) -> WebhookSink:
    return WebhookSink(*settings())
