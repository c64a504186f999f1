"""$KIRI_HOME/config.toml: what a person configures (sources, sinks, their own atoms).

Secrets never appear in it, nor in argv, logs or records: a key `NAME_env` names an environment
variable that holds the secret, or `NAME_file` a file of mode 0600 (or stricter) that does.

    [mikrotik]
    url = "https://192.168.88.1"
    user = "kiri"
    password_env = "KIRI_ROUTER_PASSWORD"
"""

from __future__ import annotations

import math
import os
import stat
import tomllib
import urllib.parse
from pathlib import Path
from typing import Any

from kiri.home import kiri_home
from kiri.stream import UserError


class ConfigError(UserError):
    """config.toml, or a secret it points to, cannot be used; the message says why."""


def config_path() -> Path:
    return kiri_home() / "config.toml"


def load_config(path: Path | None = None) -> dict[str, Any]:
    """The parsed config file, or {} when there is none."""
    path = path or config_path()
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None


def secret(section: dict[str, Any], name: str, where: str) -> str | None:
    """The secret `name` of a config section, from `name_env` or `name_file`; None if neither
    is given. `where` names the section in error messages."""
    env, file = section.get(f"{name}_env"), section.get(f"{name}_file")
    if env:
        value = os.environ.get(str(env))
        if not value:
            raise ConfigError(f"{where}: {name}_env names ${env}, which is not set")
        return value
    if file:
        return read_secret_file(Path(str(file)).expanduser(), f"{where}: {name}_file")
    return None


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


def seconds(section: dict[str, Any], key: str, default: float, where: str) -> float:
    """section[key] (or default) as a number of seconds above 0."""
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ConfigError(f"{where} {key} must be a number of seconds above 0, not {value!r}")
    return float(value)


def http_url(section: dict[str, Any], key: str, where: str) -> str:
    """section[key] as an http:// or https:// URL with a host, without a trailing slash."""
    url = section.get(key)
    parts = urllib.parse.urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{where} {key} must be an http:// or https:// URL")
    return url.rstrip("/")
