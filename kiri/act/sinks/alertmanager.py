"""The Alertmanager sink: alerts go to Prometheus Alertmanager (v2 API), resolves end them.

Settings are [alertmanager] in config.toml (kiri/clients/alertmanager.py, which also holds the
labels).
An alert decision becomes one Alertmanager alert per atom it names, all labelled with the
decision's host and incident, so Alertmanager groups an incident's atoms together with
`group_by: [host, incident]` (or all of a host's with `[host]`). Each alert is sent with
`endsAt` = now + 4 × resend and sent again, like Prometheus does, every `resend` seconds while
its incident is open: kiri-act shows the sink every decision, `ok` included, and the first one
after `resend` seconds triggers the re-send. If kiri-act stops, or its input goes quiet, the
alerts expire by themselves at their last endsAt.

A `resolve` ends every alert of its incident (`endsAt` = now). A later alert of the same atom
and incident with another severity is another label set: the old one is ended as the new one
starts. Alerts still open when kiri-act stops are not resolved: they expire instead. A resolve
for an incident this process never sent (it was restarted meanwhile) sends nothing, and its
alerts expire the same way.

Every POST carries every open alert and every ended one not yet accepted, so a failed send is
made good by the next one, whether kiri-act's retry or the next re-send.
"""

from __future__ import annotations

import argparse
import time

from kiri.act.sinks import Sink, SinkError
from kiri.clients import alertmanager
from kiri.clients.http import HttpError
from kiri.home.config import ConfigError, config_path
from kiri.wire.log import Log
from kiri.wire.records import Decision
from kiri.wire.redact import url_secrets

EXPIRY = 4  # an alert's endsAt is this many re-send intervals ahead, as Prometheus does it

Key = tuple[str, str]  # (incident, atom)
Alert = dict[str, object]  # a postable alert, as Alertmanager's API takes it


class AlertmanagerSink(Sink):
    name = "alertmanager"

    def __init__(self, am: alertmanager.Settings) -> None:
        self.am = am
        self.secrets = tuple(url_secrets(am.url, path=False))  # its path names the request
        self.open: dict[Key, Alert] = {}  # the firing alerts, without their endsAt
        self.ended: list[Alert] = []  # resolved alerts Alertmanager has not yet taken
        self.next_send = 0.0

    def deliver(self, decision: Decision, line: bytes) -> str:
        now = time.time()
        if decision.action == "resolve":
            incident = decision.incident or decision.id
            for key in [k for k in self.open if k[0] == incident]:
                self._end(self.open.pop(key), now)
            if not self.ended:
                return f"no open alert of incident {incident}"
        else:
            for atom in decision.atoms or [decision.atom]:
                self._fire(decision, atom, now)
        return self._send(now)

    def observe(self, decision: Decision) -> None:
        now = time.time()
        if now >= self.next_send and (self.open or self.ended):
            self._send(now)

    def _fire(self, decision: Decision, atom: str, now: float) -> None:
        alert: Alert = alertmanager.alert(decision, atom, self.am, now)
        key = (alertmanager.labels(decision, atom)["incident"], atom)  # the alert's own label
        old = self.open.get(key)
        if old and old["labels"] == alert["labels"]:
            alert["startsAt"] = old["startsAt"]  # the same alert, with fresh annotations
        elif old:
            self._end(old, now)
        self.open[key] = alert

    def _end(self, alert: Alert, now: float) -> None:
        self.ended.append({**alert, "endsAt": alertmanager.timestamp(now)})

    def _send(self, now: float) -> str:
        # The next re-send waits a full interval even after a failure: a missing Alertmanager
        # must not cost a timeout on every decision.
        self.next_send = now + self.am.resend
        ends = alertmanager.timestamp(now + EXPIRY * self.am.resend)
        firing = [{**alert, "endsAt": ends} for alert in self.open.values()]
        try:
            alertmanager.post_alerts(self.am, firing + self.ended)
        except HttpError as e:
            if not e.transient:  # Alertmanager took what was valid; the rest it never will
                self.ended.clear()
            raise SinkError.from_http(e) from None
        resolved = len(self.ended)
        self.ended.clear()
        return f"POST /api/v2/alerts: {len(firing)} firing, {resolved} resolved"


HELP = "Prometheus Alertmanager at [alertmanager] url of config.toml, re-sent while open"


def open_sink(args: argparse.Namespace, log: Log) -> AlertmanagerSink:
    am = alertmanager.settings()
    if am is None:
        raise ConfigError(
            f'--sink alertmanager needs url = "http://…:9093" in [alertmanager] of {config_path()}'
        )
    return AlertmanagerSink(am)
