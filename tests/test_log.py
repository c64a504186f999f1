"""kiri.wire.log: one JSON object per event and per line, at the level asked for."""

import io
import json

from kiri.wire import log


def test_an_event_is_one_json_line_with_its_context_first_then_event_level_and_time():
    out = io.StringIO()
    log.get_logger("act", out).bind(sink="log").warning("sink_failed", id="d-1", error=OSError(5))
    [line] = out.getvalue().splitlines()
    event = json.loads(line)
    assert list(event) == ["stage", "sink", "id", "error", "event", "level", "timestamp"]
    assert (event["stage"], event["error"], event["level"]) == ("act", "5", "warning")
    assert event["timestamp"].endswith("Z")


def test_what_readers_take_for_a_line_break_is_escaped_so_an_event_stays_one_line():
    out = io.StringIO()
    odd = "a\u2028b\x85c\u2029d\ne"
    log.get_logger("act", out).info(odd, text=odd)
    [line] = out.getvalue().splitlines()
    assert json.loads(line)["event"] == json.loads(line)["text"] == odd


def test_events_below_the_level_are_not_written(monkeypatch):
    monkeypatch.setenv("KIRI_LOG_LEVEL", "warning")
    out = io.StringIO()
    logger = log.get_logger("decide", out)
    logger.info("quiet")
    logger.error("loud")
    assert [json.loads(line)["event"] for line in out.getvalue().splitlines()] == ["loud"]


def test_capture_collects_events_instead_of_writing_them():
    out = io.StringIO()
    with log.capture() as events:
        log.get_logger("feedback", out).info("verdict", alert="a1")
    assert events == [{"stage": "feedback", "alert": "a1", "event": "verdict", "level": "info"}]
    assert out.getvalue() == ""
