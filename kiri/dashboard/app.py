"""The dashboard's web application (Starlette): one page, its scripts, its JSON and its events.

    GET  /                 the page (?login=CODE: the one-time link, which sets the cookie)
    GET  /static/NAME      the page's script and style; plotly.min.js from the installed plotly
    GET  /api/chart        ?atom=&span=hour|day|week: surprise per host, threshold, alert bands
    GET  /api/why          ?atom=&host=&ts=&window=: one moment field by field, and a heat strip
    GET  /api/alerts, /api/rules, /api/atoms    the lists the page shows
    GET  /events           ?atom=&since=: server-sent events: new scores, and "changed" when an
                           alert, a verdict or a rule did
    POST /api/feedback     {"alert", "verdict": confirm|dismiss|normal}: as `kiri feedback`
    POST /api/rules/delete {"rule"}: as `kiri rules delete`

The security rules are in kiri/dashboard/security.py. Handlers that read files or the store are
plain functions, which Starlette runs in its thread pool, so the event loop never waits on disk.
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import msgspec
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from kiri.dashboard import scores, views
from kiri.dashboard.security import COOKIE, Guard
from kiri.feedback import verdicts
from kiri.home.paths import valid_name
from kiri.wire.errors import KiriError

STATIC = Path(__file__).parent / "static"
TICK = 1.0  # seconds between the event stream's looks at the scores and the store
HEADERS = {
    # the page runs only its own scripts and talks only to its own server
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly package ships it (found without importing plotly)."""
    spec = importlib.util.find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        raise KiriError("the plotly package is not installed: reinstall KIRI (bin/kiri)")
    path = Path(next(iter(spec.submodule_search_locations))) / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise KiriError(f"the plotly package has no {path.name} at {path}")
    return path


class _Feedback(msgspec.Struct, forbid_unknown_fields=True):
    alert: str
    verdict: str


class _RuleDelete(msgspec.Struct, forbid_unknown_fields=True):
    rule: str


def create_app(guard: Guard) -> Starlette:
    """The application, guarded by `guard`."""
    plotly = plotly_js()

    def page(request: Request) -> Response:
        code = request.query_params.get("login")
        if code is not None:
            if not guard.login(code):
                return PlainTextResponse(
                    "This login link was used already, or is not this dashboard's: run "
                    "`kiri dashboard` again for a new one.",
                    status_code=403,
                )
            response = RedirectResponse("/", status_code=303)  # the code leaves the address bar
            response.set_cookie(COOKIE, guard.token, httponly=True, samesite="strict", path="/")
            return response
        return FileResponse(STATIC / "index.html")

    def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name == "plotly.min.js":
            return FileResponse(plotly, media_type="text/javascript")
        if name not in ("app.js", "app.css"):
            return PlainTextResponse("not found", status_code=404)
        return FileResponse(STATIC / name)

    def chart(request: Request) -> Response:
        span = request.query_params.get("span", "hour")
        if span not in views.SPANS:
            raise KiriError(f"span is one of {', '.join(views.SPANS)}")
        return JSONResponse(views.chart(_atom(request), span))

    def why(request: Request) -> Response:
        q = request.query_params
        window = min(float(q.get("window", "300")), 86400.0)
        return JSONResponse(views.why(_atom(request), q.get("host", ""), float(q["ts"]), window))

    def listing(request: Request) -> Response:
        what = request.path_params["what"]
        if what == "alerts":
            return JSONResponse({"alerts": views.alerts()})
        if what == "rules":
            return JSONResponse({"rules": views.rules()})
        if what == "atoms":
            return JSONResponse({"atoms": views.atoms(), "status": views.stages()})
        return PlainTextResponse("not found", status_code=404)

    async def feedback(request: Request) -> Response:
        asked = msgspec.json.decode(await request.body(), type=_Feedback)
        if asked.verdict not in ("confirm", "dismiss", "normal"):
            raise KiriError("verdict is confirm, dismiss or normal")
        said: list[str] = []
        await anyio.to_thread.run_sync(
            lambda: verdicts.judge(
                asked.alert,
                "confirm" if asked.verdict == "confirm" else "dismiss",
                said.append,
                normal=asked.verdict == "normal",
                by=getpass.getuser(),
                source="dashboard",
            )
        )
        return JSONResponse({"ok": True, "lines": said})

    async def delete_rule(request: Request) -> Response:
        asked = msgspec.json.decode(await request.body(), type=_RuleDelete)
        said = await anyio.to_thread.run_sync(lambda: verdicts.delete_rule(asked.rule))
        return JSONResponse({"ok": True, "lines": [said]})

    async def events(request: Request) -> Response:
        atom = _atom(request)
        now = time.time()  # at most a week back: what the page can show
        since = max(float(request.query_params.get("since", now)), now - views.SPANS["week"])
        return StreamingResponse(_events(atom, since), media_type="text/event-stream")

    routes = [
        Route("/", page),
        Route("/static/{name}", static),
        Route("/api/chart", chart),
        Route("/api/why", why),
        Route("/api/feedback", feedback, methods=["POST"]),
        Route("/api/rules/delete", delete_rule, methods=["POST"]),
        Route("/api/{what}", listing),
        Route("/events", events),
    ]
    return Starlette(
        routes=routes,
        middleware=[Middleware(BaseHTTPMiddleware, dispatch=_Gate(guard))],
        exception_handlers={
            KiriError: _refused,
            msgspec.MsgspecError: _refused,
            ValueError: _refused,
            KeyError: _refused,
        },
    )


def _atom(request: Request) -> str:
    return valid_name(request.query_params.get("atom", ""))


async def _refused(_request: Request, exc: Exception) -> Response:
    """A request the dashboard cannot do, said as the CLI says it (`Error: …` there)."""
    text = str(exc) if not isinstance(exc, KeyError) else f"missing {exc}"
    return JSONResponse({"ok": False, "error": text}, status_code=400)


class _Gate:
    """Every request: a Host the dashboard serves; data only with the cookie; a change only
    with the cookie and the page's own Origin. Then the security headers on every answer."""

    def __init__(self, guard: Guard) -> None:
        self.guard = guard

    async def __call__(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        host = request.headers.get("host", "")
        path = request.url.path
        if not self.guard.known_host(host):
            return _headed(PlainTextResponse("unknown host", status_code=400))
        needs_login = path.startswith(("/api/", "/events"))
        if needs_login and not self.guard.logged_in(request.cookies.get(COOKIE)):
            return _headed(_forbidden("not logged in: open the link `kiri dashboard` printed"))
        if request.method not in ("GET", "HEAD") and not self.guard.same_origin(
            request.headers.get("origin"), host
        ):
            return _headed(_forbidden("refused: this request does not come from the dashboard"))
        return _headed(await call_next(request))


def _forbidden(text: str) -> Response:
    return JSONResponse({"ok": False, "error": text}, status_code=403)


def _headed(response: Response) -> Response:
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    return response


async def _events(atom: str, since: float) -> AsyncIterator[str]:
    """New scores of the atom since `since`, and `changed` whenever the store's alerts, verdicts
    or rules do, checked every TICK; a comment now and then keeps the connection open."""
    seen = await anyio.to_thread.run_sync(views.version)
    yield ": connected\n\n"
    while True:
        await anyio.sleep(TICK)
        now = time.time()
        fresh = await anyio.to_thread.run_sync(_since, atom, since, now)
        if fresh:
            since = max(max(s.ts) for s in fresh.values())
            data = {h: msgspec.structs.asdict(s) for h, s in fresh.items()}
            yield f"event: scores\ndata: {json.dumps(data)}\n\n"
        version = await anyio.to_thread.run_sync(views.version)
        if version != seen:
            seen = version
            yield "event: changed\ndata: {}\n\n"
        elif not fresh:
            yield ": tick\n\n"


def _since(atom: str, since: float, now: float) -> dict[str, scores.Series]:
    found = scores.series(atom, since, now, buckets=max(1, int(now - since) * 4))
    for s in found.values():  # `since` itself was sent before
        while s.ts and s.ts[0] <= since:
            del s.ts[0], s.surprise[0], s.threshold[0]
    return {h: s for h, s in found.items() if s.ts}
