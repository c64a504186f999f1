"""Secrets kept out of what KIRI shows: outcomes, logs and alerts quote errors that may carry a
token, a password or a URL's query. Kept apart from the HTTP client, so that a stage that only
redacts (kiri-act's log and terminal sinks, the supervisor) loads no HTTP or TLS code."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

REDACTED = "***"
MIN_SECRET = 4  # characters; blanking out anything shorter would blank out ordinary words


def url_secrets(url: str, *, path: bool = True) -> list[str]:
    """The parts of a URL that may hold a secret: its userinfo (and password), query and
    fragment, and its path unless path=False (a path the caller shows, such as /api/v2/alerts)."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:  # no telling its parts apart: all of it
        return [url]
    userinfo = parts.netloc.rpartition("@")[0]
    found = [userinfo, userinfo.partition(":")[2], parts.query, parts.fragment]
    if path:
        # urlsplit drops tabs and newlines, which the request (and its errors) keep: the raw
        # rest of the URL too, as the request sends it
        after = url.partition("//")[2]
        cut = re.search(r"[/?#]", after)
        found += [parts.path.strip("/"), after[cut.start() :].lstrip("/") if cut else ""]
    return [s for s in found if s]


def redact(text: str, secrets: Iterable[str]) -> str:
    """text with every secret in it replaced by ***: as it is, and as repr() and percent-encoding
    write it, the forms in which error messages quote URLs."""
    forms = {
        form
        for s in secrets
        if len(s) >= MIN_SECRET
        for form in (s, repr(s)[1:-1], urllib.parse.quote(s, safe="/:@"))
    }
    for form in sorted(forms, key=len, reverse=True):  # a longer one may hold a shorter one
        text = text.replace(form, REDACTED)
    return text
