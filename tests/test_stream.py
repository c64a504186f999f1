"""The stage loop, driven through the real `kiri-collect replay -` and in-process."""

import json
import os
import select
import signal
import subprocess

import msgspec
from conftest import fixture_bytes, log_events, run, stage_cmd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kiri.wire import log as kiri_log
from kiri.wire.records import Obs, Score
from kiri.wire.stream import MAX_LINE, Stream

REPLAY = ("kiri.collect.stage", "replay", "-")
GOOD = fixture_bytes("pulse.ndjson").splitlines()
KINDS = fixture_bytes("kinds.ndjson").splitlines()


def bad_events(stderr):
    return [e for e in log_events(stderr) if e["event"] == "bad_record"]


def test_every_kind_passes_through_unchanged_and_in_order():
    out = run(*REPLAY, input=b"\n".join(KINDS + GOOD) + b"\n")
    assert out.returncode == 0
    assert out.stdout.splitlines() == KINDS + GOOD
    assert bad_events(out.stderr) == []


def test_unknown_fields_survive_a_hop():
    line = b'{"kind":"obs","atom":"pulse","future_field":[1,{"a":2}],"values":{"cpu":1.0}}'
    assert run(*REPLAY, input=line + b"\n").stdout == line + b"\n"


def test_bad_lines_among_good_ones_are_reported_by_line_and_skipped():
    lines = [
        GOOD[0],
        b"not json",
        GOOD[1],
        b'{"kind":"obs","values":{"cpu":"x"}}',
        GOOD[2],
        b'{"kind":7}',
        b"[1,2]",
        GOOD[3],
    ]
    out = run(*REPLAY, input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0
    assert out.stdout.splitlines() == GOOD[:4]
    bad = bad_events(out.stderr)
    assert [e["line"] for e in bad] == [2, 4, 6, 7]
    # The reason is msgspec's own wording, passed through: only that there is one is KIRI's.
    assert all(isinstance(e["reason"], str) and e["reason"].strip() for e in bad)
    summary = [e for e in log_events(out.stderr) if e["event"] == "stream_end"]
    assert summary[0]["bad"] == 4 and summary[0]["written"] == 4


def test_dead_letter_file_holds_each_bad_line_with_its_reason(tmp_path):
    dead = tmp_path / "dead.ndjson"
    lines = [GOOD[0], b"oops", b"\xff\xfe", GOOD[1]]
    out = run(*REPLAY, "--dead-letter", str(dead), input=b"\n".join(lines) + b"\n")
    assert out.returncode == 0
    entries = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [(e["line"], e["raw"]) for e in entries] == [(2, "oops"), (3, "\\xff\\xfe")]
    assert all(e["reason"] and e["source"] == "-" for e in entries)
    assert dead.stat().st_mode & 0o777 == 0o600


def test_non_utf8_bytes_in_a_string_are_rejected_and_the_stream_goes_on():
    bad = b'{"kind":"obs","atom":"pul\xc3\x28se","values":{}}'
    out = run(*REPLAY, input=b"\n".join([GOOD[0], bad, GOOD[1]]) + b"\n")
    assert out.returncode == 0
    assert out.stdout.splitlines() == GOOD[:2]
    [event] = bad_events(out.stderr)
    assert event["line"] == 2 and event["source"] == "-"
    assert isinstance(event["reason"], str) and event["reason"].strip()


def test_a_line_over_one_mib_is_rejected_without_losing_its_neighbours():
    huge = b'{"kind":"obs","meta":{"x":"' + b"a" * (MAX_LINE + 10) + b'"}}'
    out = run(*REPLAY, input=b"\n".join([GOOD[0], huge, GOOD[1], huge, GOOD[2]]) + b"\n")
    assert out.returncode == 0
    assert out.stdout.splitlines() == GOOD[:3]
    bad = bad_events(out.stderr)
    assert [e["line"] for e in bad] == [2, 4]
    assert all(f"line longer than {MAX_LINE} bytes" in e["reason"] for e in bad)


def test_an_endless_line_is_not_read_into_memory():
    # 64 MiB without a newline, then a good record: memory must stay far below that.
    proc = subprocess.Popen(
        stage_cmd(*REPLAY), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None
    block = b"x" * (1 << 20)
    for _ in range(64):
        proc.stdin.write(block)
    proc.stdin.write(b"\n" + GOOD[0] + b"\n")
    proc.stdin.flush()
    with open(f"/proc/{proc.pid}/status") as status:
        rss_kib = int(status.read().split("VmHWM:")[1].split()[0])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert out == GOOD[0] + b"\n"
    assert rss_kib < 48 * 1024
    assert "line longer than" in bad_events(err)[0]["reason"]


def test_a_last_line_without_newline_still_counts():
    out = run(*REPLAY, input=GOOD[0] + b"\n" + GOOD[1])
    assert out.stdout.splitlines() == GOOD[:2]


def test_blank_lines_are_skipped_silently():
    out = run(*REPLAY, input=b"\n\n" + GOOD[0] + b"\n\n")
    assert out.stdout.splitlines() == GOOD[:1] and bad_events(out.stderr) == []


def test_closed_reader_exits_zero_without_traceback(tmp_path):
    big = tmp_path / "big.ndjson"
    big.write_bytes(b"\n".join(GOOD * 4000) + b"\n")
    cmd = " ".join(stage_cmd("kiri.collect.stage", "replay", str(big)))
    out = subprocess.run(
        ["bash", "-c", f'{cmd} | head -n 1; echo "status=${{PIPESTATUS[0]}}"'],
        capture_output=True,
        timeout=30,
        check=False,
    )
    lines = out.stdout.splitlines()
    assert lines == [GOOD[0], b"status=0"]
    assert b"Traceback" not in out.stderr and b"BrokenPipe" not in out.stderr


def test_a_lone_record_is_passed_on_while_input_stays_open():
    # Two hops; the writer keeps the pipe open, so only an idle flush can deliver the record.
    a = subprocess.Popen(stage_cmd(*REPLAY), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    b = subprocess.Popen(stage_cmd(*REPLAY), stdin=a.stdout, stdout=subprocess.PIPE)
    assert a.stdin is not None and a.stdout is not None and b.stdout is not None
    a.stdout.close()
    try:
        for line in GOOD[:3]:
            a.stdin.write(line + b"\n")
            a.stdin.flush()
            ready, _, _ = select.select([b.stdout], [], [], 10)
            assert ready, "record did not come out of the chain while input was open"
            assert b.stdout.readline() == line + b"\n"
    finally:
        a.stdin.close()
        assert b.wait(10) == 0 and a.wait(10) == 0


def test_sigterm_mid_stream_flushes_what_was_read_and_exits_zero():
    proc = subprocess.Popen(
        stage_cmd(*REPLAY), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"\n".join(GOOD[:10]) + b"\n" + GOOD[10][:40])  # ends mid-record
    proc.stdin.flush()
    got = b""
    while got.count(b"\n") < 10:
        select.select([proc.stdout], [], [], 10)
        got += os.read(proc.stdout.fileno(), 1 << 16)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert (got + out).splitlines() == GOOD[:10]
    assert b"Traceback" not in err
    assert bad_events(err) == []  # the half-written record is not reported as bad


def test_sigint_behaves_like_sigterm():
    proc = subprocess.Popen(
        stage_cmd(*REPLAY), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(GOOD[0] + b"\n")
    proc.stdin.flush()
    assert proc.stdout.readline() == GOOD[0] + b"\n"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and out == b"" and b"KeyboardInterrupt" not in err


# -- in-process: the loop as a library -----------------------------------------------------


def run_loop(tmp_path, data: bytes, consumes=(), transform=None):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.write_bytes(data)
    fd_in, fd_out = os.open(src, os.O_RDONLY), os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        with (
            kiri_log.capture() as logs,
            Stream(kiri_log.get_logger(), fmt="json", out_fd=fd_out) as stream,
        ):
            for rec, _raw in stream.records(fd_in, consumes=consumes):
                stream.emit(transform(rec))
    finally:
        os.close(fd_in)
        os.close(fd_out)
    return dst.read_bytes().splitlines(), logs


def test_a_stage_consumes_its_kind_and_passes_the_others_in_order(tmp_path):
    def to_score(obs):
        return Score(ts=obs.ts, atom=obs.atom, host=obs.host, surprise=1.0)

    out, _ = run_loop(tmp_path, b"\n".join(KINDS) + b"\n", consumes=(Obs,), transform=to_score)
    decode = msgspec.json.Decoder().decode
    assert [decode(line)["kind"] for line in out] == [
        "score",
        "score",
        "decision",
        "outcome",
        "verdict",
        "rule",
    ]
    assert out[1:] == KINDS[1:]


def test_check_rejects_a_consumed_record_with_its_reason(tmp_path):
    src = tmp_path / "in"
    src.write_bytes(b"\n".join([GOOD[0], b'{"kind":"obs","atom":"mystery"}', GOOD[1]]) + b"\n")
    out_path = tmp_path / "out"
    fd_in = os.open(src, os.O_RDONLY)
    fd_out = os.open(out_path, os.O_WRONLY | os.O_CREAT)

    def check(o: Obs) -> str | None:
        return None if o.atom == "pulse" else f"unknown atom {o.atom!r}"

    with (
        kiri_log.capture() as logs,
        Stream(kiri_log.get_logger(), fmt="json", out_fd=fd_out) as stream,
    ):
        for rec, raw in stream.records(fd_in, consumes=(Obs,), check=check):
            stream.emit_raw(rec, raw)
    os.close(fd_in)
    os.close(fd_out)
    assert out_path.read_bytes().splitlines() == GOOD[:2]
    [bad] = [e for e in logs if e["event"] == "bad_record"]
    assert bad["line"] == 2 and bad["reason"] == "unknown atom 'mystery'"


valid_lines = st.sampled_from(KINDS + GOOD)
junk_lines = st.binary(max_size=200).filter(lambda b: b"\n" not in b and not _decodes(b))


def _decodes(b: bytes) -> bool:
    try:
        json.loads(b)
        return True
    except ValueError:
        return False


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.tuples(st.booleans(), valid_lines, junk_lines), max_size=40))
def test_arbitrary_junk_never_crashes_and_never_costs_a_valid_record(tmp_path, rows):
    lines = [good if keep else junk for keep, good, junk in rows]
    expected = [good for keep, good, _ in rows if keep]
    out, logs = run_loop(tmp_path, b"\n".join(lines) + b"\n")
    assert out == expected
    # an empty line, or one holding only the CR of a CRLF line end, is no line at all
    junk_count = sum(1 for keep, _, junk in rows if not keep and junk not in (b"", b"\r"))
    assert len([e for e in logs if e["event"] == "bad_record"]) == junk_count
