"""What the dashboard's page shows, as JSON documents: the charts' series and alert periods, why
a moment was surprising, the alerts with their state, the rules, the atoms and the stages.

Everything is read from the floors (the store, the recordings, the weights files, status.json)
each time it is asked for: there is no second database. Nothing here reads config.toml, so no
secret in it can reach a page.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec

from kiri.atoms.lifecycle import describe, read_state
from kiri.dashboard import scores
from kiri.home.paths import kiri_home
from kiri.home.status import status_path
from kiri.home.store import RULES_SEQ, AlertRow, Store, db_path
from kiri.supervise import status
from kiri.wire.errors import KiriError
from kiri.wire.render import local_time, short_id

SPANS = {"hour": 3600.0, "day": 86400.0, "week": 7 * 86400.0}
ALERTS = 200  # store rows read for the alert list and the bands


def _store() -> Store | None:
    """The store, or None while there is none (the dashboard never makes one by reading)."""
    return Store() if db_path().exists() else None


def version() -> str:
    """Changes whenever an alert, a verdict or a rule does: the page then fetches them again."""
    store = _store()
    if store is None:
        return ""
    with store:
        newest = store.alerts(1, everything=True)
        return " ".join(
            [
                newest[0].id if newest else "",
                str(store.last_verdict_seq()),
                store.get_state(RULES_SEQ),
            ]
        )


# -- charts ---------------------------------------------------------------------------------------


def chart(atom: str, span: str, now: float | None = None) -> dict[str, object]:
    """An atom's surprise over the span, per host, with its threshold and its alert periods."""
    now = time.time() if now is None else now
    start = now - SPANS[span]
    found = scores.series(atom, start, now)
    return {
        "atom": atom,
        "start": start,
        "end": now,
        "hosts": {host: msgspec.structs.asdict(s) for host, s in sorted(found.items())},
        "bands": [msgspec.to_builtins(b) for b in bands(atom, now) if b.end >= start],
    }


class Band(msgspec.Struct):
    """An alert period of one host: shaded on its chart."""

    host: str
    start: float
    end: float
    id: str  # the incident's first alert


def bands(atom: str, now: float) -> list[Band]:
    """Each incident the atom alerted in, per host: from its first alert to its resolve (to now
    while it is open)."""
    store = _store()
    if store is None:
        return []
    with store:
        rows = store.alerts(ALERTS, everything=True)
        periods: dict[tuple[str, str], Band] = {}
        for r in sorted(rows, key=lambda r: r.ts):
            if not _concerns(store, r, atom):
                continue
            key = (r.incident or r.id, r.host)
            if r.action == "alert":
                periods.setdefault(key, Band(r.host, r.ts, now, r.id))
            elif r.action == "resolve" and key in periods:
                periods[key].end = r.ts
    return list(periods.values())


def _concerns(store: Store, row: AlertRow, atom: str) -> bool:
    if row.atom == atom:
        return True
    decision = store.decision(row.id)
    return decision is not None and atom in decision.atoms


def why(atom: str, host: str, ts: float, window: float) -> dict[str, object]:
    """The score nearest ts, field by field (most unusual first), and a strip of every field's
    z over the scores around it."""
    near = scores.around(atom, host, ts, window)
    if not near:
        raise KiriError(f"no score of {atom} on {host} near {local_time(ts)}")
    s = min(near, key=lambda x: abs(x.ts - ts))
    names = [f[0] for f in s.fields] or [t.rstrip("0123456789") for t in s.tokens]
    fields = []
    for i, token in enumerate(s.tokens):
        name, label, unit = s.fields[i] if i < len(s.fields) else (names[i], names[i], "")
        fields.append(
            {
                "name": name,
                "label": label or name,
                "unit": unit,
                "value": _at(s.measured, i, s.values.get(name)),
                "token": token,
                "nll": _at(s.nll, i),
                "z": _at(s.z, i),
                "low": _at(s.usual_low, i),
                "high": _at(s.usual_high, i),
            }
        )
    order = sorted(range(len(fields)), key=lambda i: -(fields[i]["z"] or 0.0))  # type: ignore[operator]
    labels = [str(f["label"]) for f in fields]
    return {
        "atom": atom,
        "host": host,
        "ts": s.ts,
        "time": local_time(s.ts),
        "surprise": s.surprise,
        "threshold": s.threshold,
        "model": s.model,
        "fields": [fields[i] for i in order],
        "strip": {
            "ts": [x.ts for x in near],
            "fields": labels,
            "z": [[_at(x.z, i) for x in near] for i in range(len(labels))],
        },
    }


def _at(values: list[float], i: int, default: float | None = None) -> float | None:
    return values[i] if i < len(values) else default


# -- alerts and rules -----------------------------------------------------------------------------


def alerts(limit: int = 100) -> list[dict[str, object]]:
    """Alerts and suppressions, newest first, with their state: open, resolved (its incident's
    resolve came) or suppressed; who chose them (Decision.by) and their verdict."""
    store = _store()
    if store is None:
        return []
    with store:
        rows = store.alerts(ALERTS, everything=True)
        resolved = {r.incident: r.ts for r in rows if r.action == "resolve" and r.incident}
        out = []
        for r in rows:
            if r.action not in ("alert", "suppress"):
                continue
            decision = store.decision(r.id)
            end = resolved.get(r.incident) if r.incident else None
            state = "suppressed" if r.action == "suppress" else "resolved" if end else "open"
            out.append(
                {
                    "id": r.id,
                    "short_id": short_id(r.id),
                    "ts": r.ts,
                    "time": local_time(r.ts),
                    "atom": r.atom,
                    "host": r.host,
                    "state": state,
                    "resolved": end,
                    "by": (decision.by if decision else "") or "policy",
                    "severity": decision.severity if decision else "",
                    "verdict": r.verdict,
                    "normal": r.normal,
                    "summary": r.summary,
                }
            )
            if len(out) >= limit:
                break
    return out


def rules() -> list[dict[str, object]]:
    store = _store()
    if store is None:
        return []
    with store:
        standing = store.rules()
    return [
        {
            "id": r.id,
            "host": r.host,
            "atom": r.atom,
            "match": " ".join(r.match) or "(no culprit)",
            "until": local_time(r.expires, "%Y-%m-%d %H:%M"),
            "reason": r.reason,
            "alerts": [short_id(a) for a in r.alerts],
        }
        for r in standing
    ]


# -- atoms and stages -----------------------------------------------------------------------------


class _Calibration(msgspec.Struct):
    threshold: float = 0.0
    method: str = ""
    observations: int = 0
    span: float = 0.0
    early: bool = False


class _Extra(msgspec.Struct):
    atom: str = ""
    calibration: _Calibration = msgspec.field(default_factory=_Calibration)


class _Provenance(msgspec.Struct):
    source: str = ""
    steps: int = 0
    created: float = 0.0
    seconds: float = 0.0


class _WeightsHead(msgspec.Struct):
    """What the page says of a weights file; its parameters are skipped, never built (nor is
    numpy loaded, as kiri.model.weights would)."""

    provenance: _Provenance = msgspec.field(default_factory=_Provenance)
    extra: _Extra = msgspec.field(default_factory=_Extra)


_head = msgspec.json.Decoder(_WeightsHead)


def atoms() -> list[dict[str, object]]:
    """Each atom with weights or recorded scores: its model and its life cycle."""
    home = kiri_home()
    names = {p.parent.name for p in (home / "atoms").glob("*/weights.json")}
    out = []
    for name in sorted(names | set(scores.recorded_atoms())):
        out.append({"atom": name, **_model(home / "atoms" / name / "weights.json")})
        state = read_state(name)
        out[-1]["life"] = describe(state) if state else ""
    return out


def _model(path: Path) -> dict[str, object]:
    try:
        head = _head.decode(path.read_bytes())
    except FileNotFoundError:
        return {"trained": False}
    except (OSError, msgspec.MsgspecError) as e:
        return {"trained": False, "problem": f"cannot read {path.name}: {e}"}
    cal, p = head.extra.calibration, head.provenance
    return {
        "trained": True,
        "when": local_time(p.created, "%Y-%m-%d %H:%M") if p.created else "",
        "observations": cal.observations,
        "span": cal.span,
        "threshold": cal.threshold,
        "method": cal.method,
        "early": cal.early,
        "steps": p.steps,
    }


def stages() -> dict[str, object]:
    """The supervisor's status.json, as `kiri status` reads it; empty when it never ran."""
    try:
        found = status.read(status_path())
    except KiriError as e:
        return {"running": False, "problem": str(e), "stages": []}
    return {
        "running": status.supervisor_alive(found),
        "pipeline": found.pipeline,
        "updated": local_time(found.updated),
        "stages": [
            {
                "name": s.name,
                "state": s.state,
                "pid": s.pid,
                "restarts": s.restarts,
                "cpu": s.cpu,
                "rss": s.rss,
            }
            for s in found.stages
        ],
    }
