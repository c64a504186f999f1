"""kiri.collect.sources.Fit: what a source says is kept short enough for the next stage to read."""

from typing import Any

import msgspec

from kiri.collect.sources import MAX_TEXT, Fit
from kiri.wire import log as kiri_log
from kiri.wire.records import Obs
from kiri.wire.stream import MAX_LINE


def fitted(*observations: Obs) -> tuple[list[Obs], list[dict[str, Any]]]:
    with kiri_log.capture() as logs:
        out = list(Fit(kiri_log.get_logger()).all(observations))
    for obs, line in out:
        assert line == msgspec.json.encode(obs) + b"\n" and len(line) <= MAX_LINE
    return [obs for obs, _ in out], logs


def test_long_names_and_meta_values_are_left_out_with_one_warning_per_reason():
    long = "x" * (MAX_TEXT + 1)
    obs = Obs(
        atom="a",
        host="h",
        values={"ok": 1.0, long: 2.0, long + "y": 3.0},
        meta={"ok": "1", "board": long, long: "1"},
    )
    out, logs = fitted(obs, obs)
    assert [(o.values, o.meta) for o in out] == [({"ok": 1.0}, {"ok": "1"})] * 2
    assert sorted((e["reason"], e["left_out"]) for e in logs) == [
        (f"a meta entry over {MAX_TEXT} characters", "that entry"),
        (f"a value name over {MAX_TEXT} characters", "that value"),
    ]  # once each, for two observations with three long strings each


def test_a_long_host_or_an_observation_too_long_for_a_stage_is_left_out_whole():
    ok = Obs(atom="a", host="h" * MAX_TEXT, values={"v": 1.0})
    many = Obs(atom="a", host="h", values={f"{i:0200}": 1.0 for i in range(MAX_LINE // 200)})
    out, logs = fitted(Obs(atom="a", host="h" * (MAX_TEXT + 1)), ok, many)
    assert out == [ok]
    assert [e["reason"] for e in logs] == [
        f"a host name over {MAX_TEXT} characters",
        f"an observation over {MAX_LINE} bytes",
    ]
