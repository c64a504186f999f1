"""HTTP for sinks and sources: one request with a timeout and a size limit, and retries.

Standard library only. A failure is an HttpError whose message names the request (its method
and path, never the query string, or the `name` the caller gives when the path itself holds a
secret, as Telegram's does) and the reason in a few words. Whatever the reason quotes (a
malformed URL, a server's own words), `redact` blanks out the URL's secret parts and the
secrets the caller names before the message goes anywhere.
`retrying` retries what is worth retrying (connection errors, timeouts, 429 and 5xx) with
doubling backoff, and honours a server's Retry-After (or Telegram's `retry_after`).
The timeout bounds the whole request, its body included; a redirect is followed only to the
same server, since the request's secrets (an Authorization header, a token) would go along.
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, TypeVar

from kiri.wire.backoff import Backoff
from kiri.wire.redact import redact, url_secrets

MAX_BODY = 1 << 20  # bytes read from any answer; a longer one is refused
READ_SIZE = 1 << 16
ERROR_BODY = 4096  # bytes of an error answer read for its reason
T = TypeVar("T")


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> object:
        """The body decoded, not yet checked: the caller narrows it to what it expects."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError) as e:
            raise HttpError(f"answer is not JSON: {e}", self.status) from None


class HttpError(Exception):
    """A request that failed; `status` is the HTTP status, or 0 when there was no answer;
    `retry_after` is the wait the server asked for, in seconds, if it asked; `transient` says
    whether trying again may help (by default, from the status)."""

    def __init__(
        self,
        message: str,
        status: int = 0,
        retry_after: float | None = None,
        *,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.retry_after = status, retry_after
        self.transient = (
            transient if transient is not None else (status in (0, 408, 425, 429) or status >= 500)
        )


class UntrustedCertificateError(HttpError):
    """The server's TLS certificate failed verification: trying again will not help, trusting
    it might (a client that can say how adds that)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=False)


def request(
    method: str,
    url: str,
    *,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
    max_body: int = MAX_BODY,
    name: str = "",
    secrets: Iterable[str] = (),
) -> Response:
    """One request. Any status other than 2xx raises HttpError (with the answer's own words
    when it gives a short reason); its message never holds `secrets`, the URL's userinfo or
    query, nor, when the caller gives the request a `name`, its path."""
    hidden = [*secrets, *url_secrets(url, path=bool(name))]
    try:
        return _request(method, url, body, headers, timeout, context, max_body, name)
    except HttpError as e:  # redacted where it stands: its kind and fields stay
        e.args = (redact(str(e), hidden),)
        raise


def _request(
    method: str,
    url: str,
    body: bytes | None,
    headers: Mapping[str, str] | None,
    timeout: float,
    context: ssl.SSLContext | None,
    max_body: int,
    name: str,
) -> Response:
    """request(), its errors not yet redacted."""
    deadline = time.monotonic() + timeout
    try:
        where = name or f"{method} {urllib.parse.urlsplit(url).path or '/'}"
        req = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))
    except ValueError as e:  # not a URL at all; the reason quotes it
        raise HttpError(f"{name or method}: invalid URL: {e}", transient=False) from None
    opener = urllib.request.build_opener(
        urllib.request.HTTPSHandler(context=context), _SameServer(where)
    )
    try:
        with opener.open(req, timeout=timeout) as answer:
            data = _read(answer, max_body, where, deadline, timeout)
            return Response(answer.status, dict(answer.headers), data)
    except urllib.error.HTTPError as e:
        text = e.read(ERROR_BODY).decode("utf-8", "replace")
        raise HttpError(
            f"{where}: HTTP {e.code} {_short(text) or e.reason}",
            e.code,
            _retry_after(e.headers.get("Retry-After"), text),
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as e:
        raise _no_answer(where, e, timeout) from None
    except (http.client.InvalidURL, ValueError) as e:  # a space in the path, a bad port, ...
        raise HttpError(f"{where}: invalid URL: {e}", transient=False) from None
    except http.client.HTTPException as e:  # an answer cut short or garbled: try again
        raise HttpError(f"{where}: bad answer: {type(e).__name__}") from None


def _no_answer(where: str, e: OSError, timeout: float) -> HttpError:
    """Why no answer came, in a few words: an untrusted certificate, a timeout, the system's
    reason (Connection refused, Name or service not known), or TLS's."""
    reason = e.reason if isinstance(e, urllib.error.URLError) else e
    if isinstance(reason, ssl.SSLCertVerificationError):
        return UntrustedCertificateError(
            f"{where}: the server's certificate is not trusted ({reason.verify_message})"
        )
    if isinstance(reason, TimeoutError):
        return HttpError(f"{where}: no answer within {timeout:g} s")
    if isinstance(reason, ssl.SSLError):
        return HttpError(f"{where}: TLS failed ({reason.reason or reason})")
    if isinstance(reason, OSError) and reason.strerror:
        return HttpError(f"{where}: {reason.strerror}")
    return HttpError(f"{where}: {reason or type(e).__name__}")


class _SameServer(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to the same scheme, host and port."""

    def __init__(self, where: str) -> None:
        self.where = where

    def redirect_request(
        self,
        req: urllib.request.Request,
        fp: IO[bytes],
        code: int,
        msg: str,
        headers: http.client.HTTPMessage,
        newurl: str,
    ) -> urllib.request.Request | None:
        target = urllib.parse.urlsplit(urllib.parse.urljoin(req.full_url, newurl))
        origin = urllib.parse.urlsplit(req.full_url)
        if (target.scheme, target.netloc) != (origin.scheme, origin.netloc):
            raise HttpError(
                f"{self.where}: HTTP {code} redirects to another server, which is not followed",
                code,
                transient=False,
            )
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def post_json(
    url: str,
    payload: object,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float = 10.0,
    context: ssl.SSLContext | None = None,
    name: str = "",
    secrets: Iterable[str] = (),
) -> Response:
    body = json.dumps(payload, separators=(",", ":")).encode()
    return request(
        "POST",
        url,
        body=body,
        timeout=timeout,
        context=context,
        name=name,
        secrets=secrets,
        headers={"Content-Type": "application/json", **(headers or {})},
    )


def retrying(
    call: Callable[[], T],
    *,
    attempts: int = 3,
    backoff: float = 0.5,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """call(), again after backoff (doubling) while it fails transiently, at most `attempts`
    times in all; a server's requested wait replaces the backoff. `sleep` may return False
    (a stage stopping) to give up at once."""
    waits = Backoff(backoff)
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except HttpError as e:
            if not e.transient or attempt == attempts:
                raise
            if sleep(waits.failed(str(e), e.retry_after)) is False:
                raise
    raise AssertionError("unreachable")


def _read(
    answer: http.client.HTTPResponse, limit: int, where: str, deadline: float, timeout: float
) -> bytes:
    """The body, refused once it would exceed `limit` (before reading it, when its length is
    given) or would take past the deadline (read in pieces, so a slow trickle cannot stretch
    the timeout)."""
    length = answer.headers.get("Content-Length", "")
    if length.isdigit() and int(length) > limit:
        raise HttpError(f"{where}: answer of {length} bytes, larger than {limit}")
    body = bytearray()
    while chunk := answer.read1(min(READ_SIZE, limit + 1 - len(body))):
        body += chunk
        if len(body) > limit:
            raise HttpError(f"{where}: answer larger than {limit} bytes")
        if time.monotonic() > deadline:
            raise HttpError(f"{where}: no answer within {timeout:g} s")
    return bytes(body)


def _short(text: str) -> str:
    """A short reason from an error body: JSON's description/error/message (with Prometheus's
    errorType before it), or the text."""
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            words = (doc.get(k) for k in ("description", "error", "message"))
            text = next((w for w in words if isinstance(w, str) and w), "")  # not error=404
            if doc.get("errorType") and doc.get("error"):  # Prometheus: bad_data: parse error…
                text = f"{doc['errorType']}: {text}"
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:200]


def _retry_after(header: str | None, text: str) -> float | None:
    """Seconds to wait: the Retry-After header, or Telegram's parameters.retry_after."""
    try:
        return float(header) if header else float(json.loads(text)["parameters"]["retry_after"])
    except (ValueError, KeyError, TypeError):
        return None
