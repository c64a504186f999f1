"""Prometheus Alertmanager, over its v2 API: KIRI's alerts as Alertmanager sees them, and silences.

    [alertmanager]
    url = "http://127.0.0.1:9093"
    generator_url = "http://kiri.example.org/alerts/{id}"   # optional; {id}: the decision id
    resend = 60       # seconds between re-sends of the alerts still open (default 60)
    timeout = 10      # seconds to wait for Alertmanager (default 10)

The sink (kiri/act/sinks/alertmanager.py) sends one alert per atom of a decision, and `kiri feedback
dismiss ID --for 2h` (kiri/feedback/verdicts.py) silences them (a repeat updates the silence, a
confirmation of the alert ends it). Both rest on the label set below,
which is an alert's identity in Alertmanager, so it stays the same for as long as the atom is in the
incident: alertname "KiriAnomaly", host, atom, incident and severity.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from kiri.clients.http import HttpError, post_json, request
from kiri.home.config import load_config
from kiri.wire.records import Decision
from kiri.wire.render import alert_lines, culprit_lines, printable, short_id

ALERTNAME = "KiriAnomaly"


@dataclass(frozen=True)
class Settings:
    url: str  # without a trailing slash; the API's paths follow it
    generator_url: str
    resend: float
    timeout: float


def settings() -> Settings | None:
    """[alertmanager] of config.toml, or None when it names no url."""
    section = load_config().alertmanager
    if section is None or section.url is None:
        return None
    return Settings(section.url, section.generator_url, section.resend, section.timeout)


# -- alerts ---------------------------------------------------------------------------------------


def labels(decision: Decision, atom: str) -> dict[str, str]:
    """The identity of `atom`'s alert in the decision's incident."""
    return {
        "alertname": ALERTNAME,
        "host": decision.host,
        "atom": atom,
        "incident": decision.incident or decision.id,
        "severity": decision.severity or "warning",
    }


def alert(decision: Decision, atom: str, am: Settings, starts: float) -> dict[str, object]:
    """A postable alert for one atom of an alert decision, without its endsAt."""
    lines = alert_lines(decision)
    body: dict[str, object] = {
        "labels": labels(decision, atom),
        "annotations": {  # the alert as every sink tells it (kiri.wire.render.alert_lines)
            "summary": lines[0],
            "description": "\n".join(lines),
            "culprits": printable("; ".join(culprit_lines(decision))),
            "id": decision.id,
            "short_id": short_id(decision.id),
        },
        "startsAt": timestamp(starts),
    }
    if am.generator_url:
        body["generatorURL"] = am.generator_url.replace("{id}", decision.id)
    return body


def post_alerts(am: Settings, alerts: Sequence[Mapping[str, object]]) -> None:
    """Send alerts, firing and resolved alike; raises HttpError."""
    post_json(f"{am.url}/api/v2/alerts", alerts, timeout=am.timeout)


# -- silences -------------------------------------------------------------------------------------


def silence(
    am: Settings,
    decision: Decision,
    starts: float,
    ends: float,
    comment: str,
    silence_id: str = "",
) -> str:
    """Silence the alerts of this decision's atoms on its host, in any incident, from `starts` to
    `ends`; the silence's id. With `silence_id`, that silence is updated instead (Alertmanager
    answers with its id, or with a new one when it had to replace it). Raises HttpError."""
    body: dict[str, object] = {
        "matchers": matchers(decision.host, decision.atoms or [decision.atom]),
        "startsAt": timestamp(starts),
        "endsAt": timestamp(ends),
        "createdBy": "kiri",
        "comment": comment,
    }
    if silence_id:
        body["id"] = silence_id
        body["startsAt"] = _active_start(am, silence_id) or body["startsAt"]
    answer: object = post_json(f"{am.url}/api/v2/silences", body, timeout=am.timeout).json()
    given: object = answer.get("silenceID") if isinstance(answer, dict) else None
    if not isinstance(given, str):
        raise HttpError("POST /api/v2/silences: the answer has no silenceID")
    return given


def _active_start(am: Settings, silence_id: str) -> str | None:
    """When the silence is active, the start Alertmanager gave it: an update of an active silence
    must keep its start, or Alertmanager expires it and makes a new one (with a new id)."""
    try:
        found: object = request(
            "GET", f"{am.url}/api/v2/silence/{silence_id}", timeout=am.timeout
        ).json()
    except HttpError:
        return None  # gone or unreadable: the POST says which
    if not isinstance(found, dict) or not isinstance(found.get("status"), dict):
        return None
    start = found.get("startsAt")
    active = found["status"].get("state") == "active"
    return start if active and isinstance(start, str) else None


def expire(am: Settings, silence_id: str) -> None:
    """End a silence now (it stays listed as expired). Raises HttpError."""
    request("DELETE", f"{am.url}/api/v2/silence/{silence_id}", timeout=am.timeout)


def matchers(host: str, atoms: list[str]) -> list[dict[str, str | bool]]:
    """alertname and host equal, and atom equal to the one atom or matching any of several."""
    atom: dict[str, str | bool] = {
        "name": "atom",
        "value": atoms[0],
        "isRegex": False,
        "isEqual": True,
    }
    if len(atoms) > 1:  # Alertmanager anchors regex matchers: this is exactly one of them
        atom.update(value="|".join(map(re.escape, atoms)), isRegex=True)
    return [
        {"name": "alertname", "value": ALERTNAME, "isRegex": False, "isEqual": True},
        {"name": "host", "value": host, "isRegex": False, "isEqual": True},
        atom,
    ]


def timestamp(ts: float) -> str:
    """RFC 3339 in UTC, as Alertmanager reads times."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
