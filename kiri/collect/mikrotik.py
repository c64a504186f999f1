"""kiri-collect mikrotik: poll a RouterOS v7 router's REST API (what it observes:
kiri/atoms/mikrotik.py).

One reading is two documents: /rest/system/resource (CPU load, memory, disk, uptime) and
/rest/interface (each interface's byte, error, drop and link-down counters). RouterOS sends
every value as a string; system/resource comes as an object or as a one-element list. Rates
and deltas need two readings, so a run's first reading makes no observation (the collector
takes the second one soon after).

The router comes from the command line when --url is given, and [mikrotik] of config.toml is
not used then (a password configured for one router never goes to another). Without --url it
comes from [mikrotik] in $KIRI_HOME/config.toml, where options given on the command line win, as
everywhere (kiri.home.config.setting); --ca and --insecure are one setting there. With no
router at all the source is absent: one log line and exit status 125, so a supervisor leaves
it stopped instead of restarting it again and again.

RouterOS sends the password with every request, so only https:// is accepted and the router's
certificate is verified unless --insecure says not to (--ca trusts a self-signed one). Every
request has a timeout, and a body over MAX_BODY is refused without being read whole. A failed
poll is logged, once per distinct reason while it lasts, and polling goes on; the next reading
measures its rates over the whole gap. After --give-up-polls failed polls in a row (10), or
--give-up-time seconds of them (300), it exits with an error naming the last failure.
"""

from __future__ import annotations

import argparse
import base64
import math
import os
import ssl
import time
import urllib.parse
from pathlib import Path

import msgspec

from kiri.clients import http
from kiri.collect.sources import Failures, add_poll_options, poll
from kiri.home import durations
from kiri.home.config import (
    MikrotikSection,
    config_path,
    load_config,
    read_secret_file,
    secret,
    setting,
)
from kiri.wire.errors import DO_NOT_RESTART, KiriError
from kiri.wire.records import Obs
from kiri.wire.stream import Stream

MAX_BODY = 1 << 20  # RouterOS answers in kilobytes; anything bigger is not a router's answer
PRIME_WAIT = 1.0  # seconds between a run's first two readings, when --interval is longer
RESOURCE = "/rest/system/resource"
INTERFACES = "/rest/interface"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = sub.add_parser("mikrotik", help="a MikroTik RouterOS v7 router over its REST API")
    p.add_argument(
        "--url",
        help="the router, https://HOST[:PORT] (default: url in [mikrotik] "
        "of $KIRI_HOME/config.toml, which is not used when --url is given)",
    )
    p.add_argument("--user", help="the router user to log in as (a read-only one is enough)")
    password = p.add_mutually_exclusive_group()
    password.add_argument(
        "--password-env", metavar="VAR", help="read the password from this environment variable"
    )
    password.add_argument(
        "--password-file",
        metavar="PATH",
        help="read the password from this file, of mode 0600 or stricter",
    )
    tls = p.add_mutually_exclusive_group()
    tls.add_argument(
        "--ca",
        metavar="FILE",
        help="trust the router's certificate when this PEM file signed it "
        "(or is it: a self-signed router)",
    )
    tls.add_argument(
        "--insecure",
        action="store_true",
        help="do not verify the router's certificate (anyone on the way could read the password)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=5.0,
        help="seconds to wait for each answer of the router (default 5)",
    )
    add_poll_options(p, "mikrotik", 10.0, host="the router's, from its URL", failing=True)
    p.set_defaults(collect=collect)
    return p


class Router(msgspec.Struct, frozen=True):
    url: str
    user: str
    password: str
    ca: str | None
    insecure: bool


def collect(args: argparse.Namespace, stream: Stream) -> None:
    router = configured_router(args)
    if router is None:
        stream.log.warning(
            "no_router",
            reason=f"no --url, and no url in [mikrotik] of "
            f"{config_path()}: nothing to poll, not restarting",
        )
        raise SystemExit(DO_NOT_RESTART)
    if args.timeout <= 0:
        raise KiriError("--timeout must be greater than 0")
    api = RouterAPI(router, args.timeout)
    if router.insecure:
        stream.log.warning(
            "tls_unverified",
            router=api.netloc,
            reason="--insecure: the router's certificate is not checked",
        )
    failures = Failures(
        args,
        stream.log,
        f"router {api.netloc}",
        "router_poll_failed",
        "router_answers",
        router=api.netloc,
    )
    prime_wait = min(args.interval, PRIME_WAIT)
    source = RouterSource(api, args.host or api.host, stream, prime_wait, failures)
    poll(args, stream, "mikrotik", source.sample)


def configured_router(args: argparse.Namespace) -> Router | None:
    """The router to poll, from the command line or config.toml; None when there is none.
    [mikrotik] is one router: with --url, which names another, none of it is used."""
    section = MikrotikSection() if args.url else (load_config().mikrotik or MikrotikSection())
    url = setting(args.url, section.url, None)
    if not url:
        return None
    user = setting(args.user, section.user, None)
    if user is None:
        raise KiriError("no router user: give --user NAME, or user in [mikrotik] of config.toml")
    if args.ca or args.insecure:  # how to trust the router is one setting: --ca or --insecure
        ca, insecure = args.ca, args.insecure
    else:
        ca, insecure = section.ca, section.insecure
    return Router(url, user, _password(args, section), ca, insecure)


def _password(args: argparse.Namespace, section: MikrotikSection) -> str:
    if args.password_env:
        value = os.environ.get(args.password_env)
        if not value:
            raise KiriError(f"--password-env names ${args.password_env}, which is not set")
        return value
    if args.password_file:
        return read_secret_file(Path(args.password_file).expanduser(), "--password-file")
    value = secret("[mikrotik]", "password", section.password_env, section.password_file)
    if value is None:
        raise KiriError(
            "no router password: give --password-env VAR or --password-file PATH, "
            "or password_env or password_file in [mikrotik] of config.toml"
        )
    return value


class RouterAPI:
    """GETs to the router's REST API over verified HTTPS, with basic auth."""

    def __init__(self, router: Router, timeout: float) -> None:
        parts = urllib.parse.urlsplit(router.url)
        if "@" in parts.netloc:  # said without echoing the URL: it holds a password
            raise KiriError(
                "put the user in --user and the password in --password-env or "
                "--password-file, not in the router's URL"
            )
        if parts.scheme != "https" or not parts.hostname:
            raise KiriError(
                f"the router's URL must be https://HOST[:PORT], not {router.url!r}: "
                f"RouterOS sends the password with every request"
            )
        try:
            _ = parts.port  # a port that is no number: refused now, not at every poll
        except ValueError as e:
            raise KiriError(f"the router's URL {router.url!r}: {e}") from None
        self.host, self.netloc, self.base = parts.hostname, parts.netloc, parts.path.rstrip("/")
        self.user, self.timeout = router.user, timeout
        self.context = _tls_context(router.ca, router.insecure)
        token = base64.b64encode(f"{router.user}:{router.password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Accept": "application/json"}
        self._secrets = (router.password, token)

    def read(self) -> Reading:
        """Both documents of one reading."""
        resource = self._get(RESOURCE)
        interfaces = self._get(INTERFACES)
        return reading(resource, interfaces, time.monotonic(), time.time())

    def _get(self, path: str) -> object:
        try:
            answer = http.request(
                "GET",
                f"https://{self.netloc}{self.base}{path}",
                headers=self._headers,
                timeout=self.timeout,
                context=self.context,
                max_body=MAX_BODY,
                secrets=self._secrets,
            )
        except http.HttpError as e:
            raise self._router_error(path, e) from None
        try:
            return msgspec.json.decode(answer.body)
        except (msgspec.DecodeError, RecursionError) as e:
            raise RouterError(path, f"not JSON ({e})") from None

    def _router_error(self, path: str, e: http.HttpError) -> RouterError:
        """The HttpError in RouterOS's terms: which user a 401 refused, and how to trust the
        router's certificate."""
        if e.status == 401:
            return RouterError(
                path, f"the router refused user {self.user!r} and its password (HTTP 401)"
            )
        reason = str(e).removeprefix(f"GET {self.base}{path}: ")
        if isinstance(e, http.UntrustedCertificateError):
            reason += ": give --ca FILE with its certificate, or --insecure"
        return RouterError(path, reason)


def _tls_context(ca: str | None, insecure: bool) -> ssl.SSLContext:
    if insecure:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    cafile = str(Path(ca).expanduser()) if ca else None
    try:
        return ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as e:
        raise KiriError(f"the router's CA file {ca}: not a PEM certificate ({e.reason})") from None
    except OSError as e:
        raise KiriError(f"the router's CA file {ca}: {e.strerror}") from None


class RouterSource:
    """Readings into observations. The first reading only primes the counters, and the second
    follows it after `prime_wait` seconds, so the first observation is not a whole interval
    late. Failures are told as every source's are (sources.Failures), without a backoff: the
    interval and the timeout pace the polls already."""

    def __init__(
        self, api: RouterAPI, host: str, stream: Stream, prime_wait: float, failures: Failures
    ) -> None:
        self.api, self.host, self.stream, self.prime_wait = api, host, stream, prime_wait
        self.failures = failures
        self.last: Reading | None = None

    def sample(self) -> list[Obs]:
        now = self._read()
        if now is None:
            return []
        before, self.last = self.last, now
        if before is None:
            return self.sample() if self.stream.sleep(self.prime_wait) else []
        return [observe(before, now, self.host)]

    def _read(self) -> Reading | None:
        try:
            now = self.api.read()
        except RouterError as e:
            self.failures.failed(e.reason, path=e.path)
            return None
        self.failures.succeeded()
        return now


# -- readings: the two documents parsed, and two readings into an observation ---------------

COUNTERS = {  # RouterOS counter: (its per-interface key, the schema field it adds to)
    "rx-byte": ("rx", "rx"),
    "tx-byte": ("tx", "tx"),
    "rx-error": ("rx_errors", "errors"),
    "tx-error": ("tx_errors", "errors"),
    "rx-drop": ("rx_drops", "drops"),
    "tx-drop": ("tx_drops", "drops"),
    "link-downs": ("link_downs", "link_downs"),
}
RATES = ("rx-byte", "tx-byte")  # per second; the other counters are counts per interval


class RouterError(Exception):
    """A request or a reading that cannot be used: which URL path, and why."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(path, reason)
        self.path, self.reason = path, reason

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


class Interface(msgspec.Struct):
    id: str  # RouterOS's `.id`: another one under the same name is a re-created interface
    running: float | None  # 1.0 or 0.0; None when not reported
    counters: dict[str, int]  # the COUNTERS the router reported for it


class Reading(msgspec.Struct):
    at: float  # time.monotonic() when the counters were read
    ts: float  # time.time() then, for the record
    cpu: float
    mem: float
    disk: float
    uptime: float  # seconds
    interfaces: dict[str, Interface]
    meta: dict[str, str]


def parse_uptime(text: str) -> float:
    """Seconds in a RouterOS duration: `2d20h12m20s`, `1w2d3h4m5s`, `45s`, or bare `45`.
    RouterOS writes whole numbers of each unit."""
    if "." not in text:
        try:
            return durations.seconds(text)
        except ValueError:
            pass
    raise ValueError(f"uptime {text!r} is not a RouterOS duration like 2d20h12m20s")


def reading(resource: object, interfaces: object, at: float, ts: float) -> Reading:
    """One reading from the two decoded documents; RouterError names what is missing or wrong."""
    res = _resource(resource)
    try:
        uptime = parse_uptime(_text(res, "uptime"))
    except ValueError as e:
        raise RouterError(RESOURCE, str(e)) from None
    meta: dict[str, str] = {}
    for k, key in (("version", "version"), ("board", "board-name")):
        value = res.get(key)
        if isinstance(value, str):
            meta[k] = value
    return Reading(
        at=at,
        ts=ts,
        cpu=_number(res, "cpu-load", RESOURCE),
        mem=_used_percent(res, "free-memory", "total-memory"),
        disk=_used_percent(res, "free-hdd-space", "total-hdd-space"),
        uptime=uptime,
        interfaces=_interfaces(interfaces),
        meta=meta,
    )


def observe(before: Reading, now: Reading, host: str) -> Obs:
    """The observation of the interval between two readings of the same router."""
    rebooted = now.uptime < before.uptime
    elapsed = now.at - before.at
    sums = dict.fromkeys(("rx", "tx", "errors", "drops", "link_downs"), 0.0)
    per_interface: dict[str, float] = {}
    for name, iface in now.interfaces.items():
        if iface.running is not None:
            per_interface[f"{name}:running"] = iface.running
        old = None if rebooted else before.interfaces.get(name)
        if old is None or old.id != iface.id:
            continue  # new, re-created, or restarted with the router: no deltas yet
        for counter, value in iface.counters.items():
            previous = old.counters.get(counter)
            if previous is None or value < previous:
                continue  # reset in between: this interval's delta is unknown
            key, total = COUNTERS[counter]
            delta = (value - previous) / (elapsed if counter in RATES else 1)
            per_interface[f"{name}:{key}"] = delta
            sums[total] += delta
    values: dict[str, float | None] = {
        "cpu": now.cpu,
        "mem": now.mem,
        "disk": now.disk,
        **sums,
        "reboot": float(rebooted),
        **per_interface,
    }
    return Obs(ts=now.ts, atom="mikrotik", host=host, values=values, meta=now.meta)


def _resource(doc: object) -> dict[str, object]:
    if isinstance(doc, list) and len(doc) == 1:
        doc = doc[0]
    if not isinstance(doc, dict):
        raise RouterError(RESOURCE, "expected an object (or a list of one)")
    return doc


def _text(doc: dict[str, object], key: str) -> str:
    value = doc.get(key)
    if value is None:
        raise RouterError(RESOURCE, f"missing {key}")
    return str(value)


def _number(doc: dict[str, object], key: str, path: str) -> float:
    value = doc.get(key)
    if value is None:
        raise RouterError(path, f"missing {key}")
    try:  # a list or an object is no number either
        x = float(value) if isinstance(value, str | int | float) else math.nan
    except (ValueError, OverflowError):  # OverflowError: an integer beyond float range
        x = math.nan
    if not math.isfinite(x) or isinstance(value, bool):
        raise RouterError(path, f"{key} is {value!r}, not a number")
    return x


def _used_percent(doc: dict[str, object], free: str, total: str) -> float:
    """The share used, of a size in bytes: at least one byte, and no more free than that (a
    total of 1e-300 would make the share -1e305 %, which is no share)."""
    size, left = _number(doc, total, RESOURCE), _number(doc, free, RESOURCE)
    if size < 1:
        raise RouterError(RESOURCE, f"{total} is {doc[total]!r}, not a size in bytes")
    if not 0 <= left <= size:
        raise RouterError(RESOURCE, f"{free} is {doc[free]!r}, of {total} {doc[total]!r}")
    return (size - left) / size * 100


def _interfaces(doc: object) -> dict[str, Interface]:
    if not isinstance(doc, list) or not all(isinstance(i, dict) for i in doc):
        raise RouterError(INTERFACES, "expected a list of interfaces")
    interfaces = {}
    for entry in doc:
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise RouterError(INTERFACES, "an interface has no name")
        running = {"true": 1.0, "false": 0.0}.get(str(entry.get("running")))
        interfaces[name] = Interface(str(entry.get(".id", "")), running, _counters(entry, name))
    return interfaces


def _counters(entry: dict[str, object], name: str) -> dict[str, int]:
    """The counters an interface reports; one it leaves out simply has no delta."""
    counters = {}
    for counter in COUNTERS:
        value = entry.get(counter)
        if value is None:
            continue
        count = _count(value)
        if count is None:
            reason = f"{counter} of {name} is {value!r}, not a count"
            raise RouterError(INTERFACES, reason)
        counters[counter] = count
    return counters


MAX_COUNT = 1 << 64  # RouterOS counters are 64-bit: a count past that is no reading


def _count(value: object) -> int | None:
    """int(value) for a number or a string of one, from 0 up to a 64-bit counter's limit;
    None for anything else (10**400 would overflow every rate computed from it)."""
    if not isinstance(value, str | int | float):
        return None  # a list or an object
    try:
        count = int(value)
    except (ValueError, OverflowError):  # OverflowError: int(inf)
        return None
    return count if 0 <= count < MAX_COUNT else None
