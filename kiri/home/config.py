"""$KIRI_HOME/config.toml: what a person configures (sources, sinks, their own atoms).

Each section is declared here once, as a msgspec Struct that forbids unknown keys, and checks
its values in `__post_init__`. The whole file is decoded in one place, load_config(), once per
process: every stage and `kiri` command does it before anything else (kiri.wire.stream.run_main), so
none starts half-configured, and a mistake is one line naming the section and the key, an error
of usage (exit status 2):

    config.toml: [webhook] unknown key 'secert_env' (did you mean 'secret_env'?)
    config.toml: unknown section [webhok] (did you mean [webhook]?)
    config.toml: [webhook] timeout: Expected `float`, got `str`

Secrets never appear in it, nor in argv, logs or records: a key `NAME_env` names an environment
variable that holds the secret, or `NAME_file` a file of mode 0600 (or stricter) that does. They
are read by the sink or source that needs them, when it opens (secret()).

    [mikrotik]
    url = "https://192.168.88.1"
    user = "kiri"
    password_env = "KIRI_ROUTER_PASSWORD"

Where a command-line option and config.toml give the same setting, the option wins, then
config.toml, then the default: setting().
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import math
import os
import re
import stat
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, TypeVar

import msgspec
import msgspec.inspect as mi

from kiri.home.paths import kiri_home, valid_name
from kiri.wire.errors import KiriError

T = TypeVar("T")

FILE = "config.toml"  # how messages name the file
DEFAULT_TELEGRAM_API = "https://api.telegram.org"
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")  # its tokens must not hold a space
FIXED_LEVELS = 10  # a fixed field's buckets, unless it gives `levels`
MAX_LEVELS = 100  # more buckets than this for one field is a typo, not a schema


class ConfigError(KiriError):
    """config.toml, or a secret it points to, cannot be used; the message says why."""


class InvalidConfigError(ConfigError):
    """config.toml itself is wrong: it does not parse, or does not decode into Config. A usage
    error, found when a stage starts."""

    status = 2


def config_path() -> Path:
    return kiri_home() / "config.toml"


# -- the sections ---------------------------------------------------------------------------------


class Table(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """A table of config.toml: a key not declared in it is an error."""


class TelegramSection(Table, frozen=True):
    """[telegram]: kiri-act --sink telegram and kiri-collect telegram (kiri/clients/telegram.py)."""

    chat_id: int  # where alerts go
    token_env: str | None = None
    token_file: str | None = None
    allowed_ids: list[int] | None = None  # users whose presses count; None: [chat_id]
    allowed_chats: list[int] = []  # chats where anyone's press counts: only those listed
    api_url: str = DEFAULT_TELEGRAM_API

    def __post_init__(self) -> None:
        if not (self.token_env or self.token_file):
            raise ValueError(
                "no bot token: give token_env (an environment variable holding it) "
                "or token_file (a file of mode 0600)"
            )
        msgspec.structs.force_setattr(self, "api_url", _telegram_api(self.api_url))


class WebhookSection(Table, frozen=True):
    """[webhook]: kiri-act --sink webhook (kiri/act/sinks/webhook.py)."""

    url: str
    secret_env: str | None = None
    secret_file: str | None = None
    timeout: float = 10.0

    def __post_init__(self) -> None:
        msgspec.structs.force_setattr(self, "url", _http_url("url", self.url))
        _seconds("timeout", self.timeout)


class AlertmanagerSection(Table, frozen=True):
    """[alertmanager]: kiri-act --sink alertmanager and `kiri feedback dismiss --for`
    (kiri/clients/alertmanager.py). Without a url, Alertmanager is not configured."""

    url: str | None = None
    generator_url: str = ""  # {id} is the decision id
    resend: float = 60.0
    timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.url is not None:
            msgspec.structs.force_setattr(self, "url", _http_url("url", self.url))
        _seconds("resend", self.resend)
        _seconds("timeout", self.timeout)


class MikrotikSection(Table, frozen=True):
    """[mikrotik]: kiri-collect mikrotik (kiri/collect/mikrotik.py), when given no --url."""

    url: str | None = None
    user: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    ca: str | None = None
    insecure: bool = False

    def __post_init__(self) -> None:
        if self.ca and self.insecure:
            raise ValueError("give ca or insecure, not both")


class RhythmSection(Table, frozen=True):
    """[rhythm]: kiri-collect rhythm (kiri/collect/rhythm.py)."""

    repos: list[str] | None = None  # git repositories whose commits count


class RetentionSection(Table, frozen=True):
    """[retention]: how many days of recordings, of the alert log (logs/alerts.ndjson) and of
    alerts and verdicts in kiri.db are kept (kiri/home/retention.py; 0 keeps everything)."""

    recordings: float = 30.0
    alert_log: float = 30.0
    store: float = 30.0

    def __post_init__(self) -> None:
        for key in ("recordings", "alert_log", "store"):
            value = getattr(self, key)
            if not 0 <= value < math.inf:
                raise ValueError(f"{key} must be a number of days, 0 or more, not {value:g}")


class FixedField(Table, frozen=True):
    """A field of [atoms.NAME.fields] with uniform buckets over a fixed range, clamped."""

    lo: float
    hi: float
    levels: int = FIXED_LEVELS
    label: str | None = None  # None: the field's name
    unit: str = ""
    context: bool = False  # conditioned on, not scored
    # which way of moving is bad news: an alert's severity follows it
    worse: Literal["high", "low", "either", "neither"] = "either"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise ValueError("lo and hi must be numbers, lo < hi")
        if not 1 <= self.levels <= MAX_LEVELS:
            raise ValueError(f"levels must be a whole number from 1 to {MAX_LEVELS}")


FieldSpec = Literal["auto"] | FixedField  # "auto": quantile buckets fitted at training


class AtomSection(Table, frozen=True):
    """[atoms.NAME]: an atom of the person's own (kiri/atoms/registry.py), the command
    `kiri-collect exec --atom NAME` runs (kiri/collect/exec.py), and how often."""

    command: list[str] | None = None  # an argv, never run through a shell
    interval: float | None = None  # seconds between runs
    timeout: float | None = None  # seconds a run may take
    fields: dict[str, FieldSpec] | None = None
    clock: list[str] = []  # "hour", "weekday": context read from each observation's time

    def __post_init__(self) -> None:
        for c in self.clock:
            if c not in ("hour", "weekday"):
                raise ValueError(f'clock: {c!r} is not a clock field: use "hour" or "weekday"')
        if self.command is not None and not (self.command and all(self.command)):
            raise ValueError(
                "command must be the command and its arguments, a list of strings "
                "that are not empty (it never runs through a shell)"
            )
        for key, value in (("interval", self.interval), ("timeout", self.timeout)):
            if value is not None:
                _seconds(key, value)
        if self.fields is None:
            return
        if not self.fields:
            raise ValueError("fields must be a table of at least one field")
        for name in self.fields:
            if not FIELD_NAME.match(name):
                raise ValueError(
                    f"fields: {name!r} is not a field name: use letters, digits, '_', '.' and "
                    "'-', starting with a letter or '_'"
                )
        if all(isinstance(f, FixedField) and f.context for f in self.fields.values()):
            raise ValueError("fields: every field is context; score at least one")


class Config(Table, frozen=True):
    """The whole of config.toml; every section may be left out."""

    telegram: TelegramSection | None = None
    webhook: WebhookSection | None = None
    alertmanager: AlertmanagerSection | None = None
    mikrotik: MikrotikSection | None = None
    rhythm: RhythmSection | None = None
    retention: RetentionSection = RetentionSection()
    atoms: dict[str, AtomSection] = {}

    def __post_init__(self) -> None:
        for name in self.atoms:
            valid_name(name)  # a ValueError that says what an atom name is


def _seconds(key: str, value: float) -> None:
    if not 0 < value < math.inf:
        raise ValueError(f"{key} must be a number of seconds above 0, not {value:g}")


def _http_url(key: str, url: str) -> str:
    """url, an http:// or https:// URL with a host, without a trailing slash."""
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # such as a bracketed host that is not an IPv6 address
        valid = False
    if not valid:
        raise ValueError(f"{key} must be an http:// or https:// URL")
    return url.rstrip("/")


def _telegram_api(url: str) -> str:
    """The Bot API server: https://, or http:// on this machine only, since the bot token is
    part of every request's path."""
    try:
        parts = urllib.parse.urlsplit(url)
        valid = parts.scheme in ("https", "http") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        valid = False
    if not valid:
        raise ValueError(f"api_url must be https://HOST[:PORT], not {url!r}")
    if parts.scheme == "http" and not _loopback(parts.hostname or ""):
        raise ValueError(
            f"api_url {url!r} would send the bot token unencrypted: use "
            f"https:// (http:// is for a server on this machine only)"
        )
    return url.rstrip("/")


def _loopback(host: str) -> bool:
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# -- reading it -----------------------------------------------------------------------------------


def load_config(path: Path | None = None) -> Config:
    """config.toml, decoded and checked: read once per process (and path), since a stage keeps
    the configuration it started with; all defaults when there is no file. InvalidConfigError says
    what is wrong, in one line."""
    return _decoded(path or config_path())


def config_atom(name: str) -> AtomSection:
    """The [atoms.NAME] table of config.toml; an empty one when there is none."""
    return load_config().atoms.get(name) or AtomSection()


def clear_config_cache() -> None:
    """Forget every config.toml read, so the next load_config() reads it again."""
    _decoded.cache_clear()


@functools.cache
def _decoded(path: Path) -> Config:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return Config()
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidConfigError(f"{path}: {e}") from None
    except RecursionError:
        raise InvalidConfigError(f"{path}: arrays or tables nested too deeply") from None
    except ValueError:  # int() refusing thousands of digits
        raise InvalidConfigError(f"{path}: an integer beyond TOML's 64 bits") from None
    if huge := _huge_integer(raw):
        raise InvalidConfigError(f"{FILE}: {'.'.join(map(str, huge))}: an integer beyond 64 bits")
    # msgspec's path names a key of a table as `[...]`: each atom, and each of its fields, is
    # converted on its own first, so that an error there names it.
    atoms = raw.get("atoms")
    for name, table in (atoms if isinstance(atoms, dict) else {}).items():
        fields = table.get("fields") if isinstance(table, dict) else None
        for field, spec in (fields if isinstance(fields, dict) else {}).items():
            where = ("atoms", name, "fields", field)
            if not isinstance(spec, dict) and spec != "auto":
                raise InvalidConfigError(
                    f'{FILE}: {_place(where)}expected "auto" or a table like '
                    f"{{ lo = 0, hi = 100, levels = 10 }}, got {spec!r}"
                )
            if isinstance(spec, dict):
                _convert(spec, FixedField, where)
        _convert(table, AtomSection, ("atoms", name))
    return _convert(raw, Config, ())


INT64 = range(-(1 << 63), 1 << 63)  # TOML's integers; the spec makes any other an error


def _huge_integer(raw: dict[str, object]) -> tuple[str | int, ...] | None:
    """Where the first integer beyond TOML's 64 bits is (tomllib reads them, nothing else
    would: a Telegram chat id of 10^22 cannot go out as JSON), or None."""
    stack: list[tuple[tuple[str | int, ...], object]] = [((), raw)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, dict):
            stack += [((*where, k), v) for k, v in value.items()]
        elif isinstance(value, list):
            stack += [((*where, i), v) for i, v in enumerate(value)]
        elif isinstance(value, int) and value not in INT64:
            return where
    return None


def _convert(raw: object, kind: type[T], where: tuple[str, ...]) -> T:
    """raw as a `kind`, the table at `where` in the file; InvalidConfigError when it is not one."""
    try:
        return msgspec.convert(raw, kind)
    except msgspec.ValidationError as e:
        raise InvalidConfigError(_message(str(e), kind, where)) from None
    except RecursionError:
        raise InvalidConfigError(f"{FILE}: {_place(where)}nested too deeply") from None


def _message(error: str, kind: type, where: tuple[str, ...]) -> str:
    """msgspec's `Expected `float`, got `str` - at `$.webhook.timeout`` as config.toml's
    `[webhook] timeout: Expected `float`, got `str``."""
    what, _, at = error.partition(" - at `$")
    what = what.replace(" | null", "")  # TOML has no null: a key left out is the default
    inner = tuple(_keys(at.rstrip("`")))
    keys = (*where, *inner)
    if unknown := re.fullmatch(r"Object contains unknown field `(.+)`", what):
        return _unknown(unknown[1], keys, _known_keys(kind, inner))
    if missing := re.fullmatch(r"Object missing required field `(.+)`", what):
        return f"{FILE}: {_place(keys)}missing required key {missing[1]!r}"
    if what.startswith("Expected `object"):  # only tables are objects in TOML
        got = what.rpartition(", got ")[2]
        return f"{FILE}: {'.'.join(map(str, keys))} must be a table, not {got}"
    if _table_at(kind, inner) is not None:  # said of a table as a whole, by its __post_init__
        return f"{FILE}: {_place(keys)}{what}"
    n = len(keys)
    while n > 1 and isinstance(keys[n - 1], int):  # an item of an array: the key's value
        n -= 1
    key = str(keys[n - 1]) + "".join(f"[{i}]" for i in keys[n:])
    return f"{FILE}: {_place(keys[: n - 1])}{key}: {what}"


def _keys(path: str) -> list[str | int]:
    """`.atoms[...].command[1]` as ["atoms", "...", "command", 1]."""
    return [
        int(index) if index.isdigit() else name or index
        for name, index in re.findall(r"\.([^.\[]+)|\[([^\]]*)\]", path)
    ]


def _place(table: tuple[str | int, ...]) -> str:
    """How a message names a table: `[webhook] `, `[atoms.gpu] `, but a field of an atom,
    written inline, as `atoms.gpu.fields.temp: `."""
    if not table:
        return ""
    dotted = ".".join(map(str, table))
    return f"{dotted}: " if len(table) > 2 else f"[{dotted}] "


def _unknown(key: str, table: tuple[str | int, ...], known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    if not table:
        hint = f" (did you mean [{close[0]}]?)" if close else ""
        return f"{FILE}: unknown section [{key}]{hint}"
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"{FILE}: {_place(table)}unknown key {key!r}{hint}"


def _known_keys(kind: type, keys: tuple[str | int, ...]) -> list[str]:
    """The keys the table at `keys` in a `kind` may hold."""
    table = _table_at(kind, keys)
    return [f.encode_name for f in table.fields] if table else []


def _table_at(kind: type, keys: tuple[str | int, ...]) -> mi.StructType | None:
    """The Struct at `keys` in a `kind`; None when what is there is not a table."""
    info: mi.Type = mi.type_info(kind)
    for key in (*keys, None):
        if isinstance(info, mi.UnionType):  # a section that may be left out
            info = next((t for t in info.types if isinstance(t, mi.StructType)), info)
        if not isinstance(info, mi.StructType):
            return None
        if key is None:
            return info
        info = next((f.type for f in info.fields if f.encode_name == key), mi.AnyType())
    return None


# -- using it -------------------------------------------------------------------------------------


def setting(option: T | None, configured: T | None, default: T) -> T:
    """The one rule for a setting that has a command-line option too: the option when given,
    else config.toml's, else the default."""
    if option is not None:
        return option
    return configured if configured is not None else default


def secret(where: str, name: str, env: str | None, file: str | None) -> str | None:
    """The secret `name` of a config section (`where`, such as "[webhook]"), from `name_env` or
    `name_file`; None if neither is given."""
    if env:
        value = os.environ.get(env)
        if not value:
            raise ConfigError(f"{FILE}: {where} {name}_env names ${env}, which is not set")
        return value
    if file:
        return read_secret_file(Path(file).expanduser(), f"{FILE}: {where} {name}_file")
    return None


def secret_variables(config: Config) -> set[str]:
    """The environment variables config.toml names as holding secrets (its `NAME_env` keys)."""
    names = set()
    for field in msgspec.structs.fields(config):
        section = getattr(config, field.name)
        if isinstance(section, Table):
            for key in msgspec.structs.fields(section):
                value = getattr(section, key.name)
                if key.name.endswith("_env") and isinstance(value, str) and value:
                    names.add(value)
    return names


# variables that hold a secret by their name, whatever config.toml says (or its file: _FILE)
SECRET_NAME = re.compile(r"^KIRI_\w+_(TOKEN|SECRET|PASSWORD|KEY)(_FILE)?$")


def secret_names(environ: Mapping[str, str]) -> set[str]:
    """The variables of `environ` that hold a secret: those config.toml names as holding one
    (`NAME_env`), and any KIRI_..._TOKEN, _SECRET, _PASSWORD or _KEY (or such a name ending in
    _FILE)."""
    named = secret_variables(load_config())
    return {k for k in environ if k in named or SECRET_NAME.match(k)}


def read_secret_file(path: Path, what: str) -> str:
    """A secret kept in a file that only its owner can read."""
    try:
        mode = path.stat().st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"{what} {path} is readable by others (mode {stat.S_IMODE(mode):o}); chmod 600 it"
            )
        return path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"{what} {path}: {e.strerror}") from None
