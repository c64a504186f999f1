"""Who may use the dashboard: a browser that logged in with the one-time link `kiri dashboard`
printed, and only from the dashboard's own page.

The install's token is kept in $KIRI_HOME/dashboard.token (0600, made on first start). The link
carries a one-time code, made afresh at each start and good for one login: opening it sets the
token as an HttpOnly, SameSite=Strict cookie and forgets the code, so the link in a terminal's
scroll-back or a browser's history logs nobody in again. Every request for data needs the cookie;
every state-changing one (a POST) also needs an Origin header naming the page's own origin, and
a Host the dashboard serves, which stops another site's page, and a DNS name rebound to
127.0.0.1, from acting through a logged-in browser.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from kiri.home.paths import kiri_home, private_dir

COOKIE = "kiri_dashboard"


def token_path() -> Path:
    return kiri_home() / "dashboard.token"


def install_token() -> str:
    """The install's token, made (0600) the first time."""
    path = token_path()
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    private_dir(path.parent)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


class Guard:
    """The token, the one-time code, and the hosts the dashboard answers to."""

    def __init__(self, token: str, hosts: set[str] | None) -> None:
        self.token = token
        self.hosts = hosts  # None: any (--listen on another address)
        self._code: str | None = secrets.token_urlsafe(16)

    @property
    def code(self) -> str:
        return self._code or ""

    def login(self, code: str) -> bool:
        """Whether this is the one-time code; it is good once."""
        if self._code is None or not hmac.compare_digest(code, self._code):
            return False
        self._code = None
        return True

    def known_host(self, host: str) -> bool:
        return self.hosts is None or host in self.hosts

    def logged_in(self, cookie: str | None) -> bool:
        return cookie is not None and hmac.compare_digest(cookie, self.token)

    def same_origin(self, origin: str | None, host: str) -> bool:
        return origin is not None and origin == f"http://{host}"
