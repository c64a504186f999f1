"""kiri dashboard, in a real browser: Debian's headless Chromium driven by Playwright, against a
KIRI_HOME of recorded scores and stored alerts (tests/dashboard_home.py). Every page test fails
on any console error; screenshots land in test-artifacts/."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import stage_cmd
from dashboard_home import (
    ALERT_OPEN,
    ALERT_RESOLVED,
    ALERT_SUPPRESSED,
    CHROMIUM,
    CHROMIUM_ARGS,
    RULE,
    make_home,
    score,
    write_scores,
)

from kiri.dashboard import scores
from kiri.home.store import Store

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


class Dashboard:
    """A running `kiri dashboard --port 0`: its login link, origin and process."""

    def __init__(self, *extra: str) -> None:
        self.proc = subprocess.Popen(
            stage_cmd("kiri.cli", "dashboard", "--port", "0", *extra),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        found = re.search(r"(http://[\d.]+:\d+)/\?login=(\S+)", line)
        assert found, f"no login link in {line!r}: {self.stderr()}"
        self.origin, self.code = found.group(1), found.group(2)
        self.link = f"{self.origin}/?login={self.code}"

    def stderr(self) -> str:
        self.stop()
        assert self.proc.stderr is not None
        return self.proc.stderr.read().decode()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    assert CHROMIUM.exists(), "no /usr/bin/chromium: bin/test installs it (.ci/debian-packages)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def home(kiri_home: Path) -> float:
    return make_home(kiri_home)


@pytest.fixture
def dashboard(home: float) -> Iterator[Dashboard]:
    d = Dashboard()
    yield d
    d.stop()


@pytest.fixture
def page(browser, dashboard: Dashboard, request: pytest.FixtureRequest) -> Iterator[object]:
    """A logged-in page, with the first chart drawn; no console error may happen on it."""
    context = browser.new_context(viewport={"width": 1280, "height": 1400})
    pg = context.new_page()
    problems: list[str] = []
    pg.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    pg.on("pageerror", lambda e: problems.append(str(e)))
    pg.goto(dashboard.link)
    pg.wait_for_selector("body[data-ready='1']", timeout=15000)
    yield pg
    ARTIFACTS.mkdir(exist_ok=True)
    pg.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    context.close()
    assert problems == []


def until(pg, expression: str, timeout: float = 10.0) -> None:
    """Wait until a JavaScript expression is true on the page. (Playwright's wait_for_function
    would eval it inside the page, which the page's Content-Security-Policy forbids.)"""
    deadline = time.monotonic() + timeout
    while not pg.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression}"
        pg.wait_for_timeout(100)


def row(pg, alert_id: str):
    return pg.locator(f"#alerts tr[data-id='{alert_id}']")


def verdict_of(alert_id: str):
    with Store() as store:
        return store.db.execute(
            "SELECT verdict, normal, source FROM verdicts WHERE alert = ?", (alert_id,)
        ).fetchone()


def test_the_chart_shows_surprise_the_threshold_and_a_band_per_alert(page):
    chart = page.locator(".chart").first
    assert chart.get_attribute("data-host") == "vm"
    traces = page.evaluate("document.querySelector('.chart').data.map(t => t.name)")
    assert traces == ["surprise", "threshold"]
    points = page.evaluate("document.querySelector('.chart').data[0].y")
    assert 600 <= len(points) <= 1000 and max(points) == 12.0  # an hour at 5 s, the peaks kept
    shapes = page.evaluate("document.querySelector('.chart').layout.shapes.map(s => s.name)")
    assert sorted(shapes) == [f"alert {ALERT_RESOLVED}", f"alert {ALERT_OPEN}"]
    assert chart.locator(".shapelayer path").count() == 2  # drawn
    states = {
        a: row(page, a).locator("td").nth(4).inner_text()
        for a in (ALERT_OPEN, ALERT_RESOLVED, ALERT_SUPPRESSED)
    }
    assert states == {
        ALERT_OPEN: "open",
        ALERT_RESOLVED: "resolved",
        ALERT_SUPPRESSED: "suppressed",
    }
    assert row(page, ALERT_OPEN).locator("td").nth(5).inner_text() == "nerve"


def test_dismiss_records_the_verdict_the_cli_records_and_says_what_it_said(page):
    row(page, ALERT_OPEN).get_by_role("button", name="Dismiss").click()
    result = row(page, ALERT_OPEN).locator(".result")
    result.filter(has_text="dismissed").wait_for()
    assert result.inner_text().splitlines() == [
        "alert b2b2b2 dismissed",
        "2 more dismissals like this will suppress pulse on vm when it names C9 (a rule of one "
        "token asks for one dismissal more)",
    ]
    assert verdict_of(ALERT_OPEN) == ("dismiss", 0, "dashboard")
    assert row(page, ALERT_OPEN).locator("td.verdict").inner_text() == "dismissed"


def test_confirm_records_a_confirmation(page):
    row(page, ALERT_RESOLVED).get_by_role("button", name="Confirm").click()
    row(page, ALERT_RESOLVED).locator(".result").filter(has_text="confirmed").wait_for()
    assert verdict_of(ALERT_RESOLVED) == ("confirm", 0, "dashboard")
    assert row(page, ALERT_RESOLVED).locator("td.verdict").inner_text() == "confirmed"


def test_new_normal_records_a_dismissal_as_the_new_normal(page):
    row(page, ALERT_OPEN).get_by_role("button", name="New normal").click()
    result = row(page, ALERT_OPEN).locator(".result")
    result.filter(has_text="new normal").wait_for()
    assert result.inner_text() == "alert b2b2b2 dismissed, as the new normal"
    assert verdict_of(ALERT_OPEN) == ("dismiss", 1, "dashboard")


def test_delete_deletes_the_rule_as_kiri_rules_delete_does(page):
    rule_row = page.locator(f"#rules tr[data-id='{RULE}']")
    rule_row.get_by_role("button", name="Delete").click()
    rule_row.locator(".result").filter(has_text="deleted").wait_for()
    assert rule_row.locator(".result").inner_text() == (
        f"rule {RULE} deleted: pulse on vm when it names L2 alerts again "
        "(kiri-feedback tells kiri-decide)"
    )
    with Store() as store:
        gone = store.rule(RULE)
    assert gone is not None and gone.deleted is not None
    assert rule_row.get_by_role("button", name="Delete").is_disabled()


def test_clicking_an_alert_says_why_field_by_field_with_a_heat_strip(page):
    row(page, ALERT_OPEN).locator("td").first.click()
    page.locator("#why-fields tbody tr").first.wait_for()
    first = page.locator("#why-fields tbody tr").first.locator("td").all_inner_texts()
    assert first == ["CPU", "97.00%", "C9", "6.10", "12.00", "2.00–30.00%"]
    labels = page.locator("#why-fields tbody tr td:first-child").all_inner_texts()
    assert len(labels) == 6 and labels[1] == "load"  # most unusual first
    strip = page.evaluate("document.querySelector('#strip').data[0]")
    assert strip["type"] == "heatmap" and len(strip["y"]) == 6 and len(strip["x"]) > 10


def test_clicking_the_chart_says_why_at_that_moment(page):
    area = page.locator(".chart .nsewdrag").first.bounding_box()
    # 5 minutes from the right end: inside the open alert's hot stretch
    page.mouse.click(area["x"] + area["width"] * (1 - 150 / 3600), area["y"] + area["height"] / 2)
    page.locator("#why-fields tbody tr").first.wait_for()
    assert page.locator("#why-head").inner_text().endswith("surprise 12.00 (threshold 8.00)")


def test_new_scores_reach_the_open_page_without_a_reload(page, kiri_home, home):
    before = page.evaluate("document.querySelector('.chart').data[0].x.length")
    now = time.time()
    path = kiri_home / "data" / "pulse" / "scores" / f"{time.strftime('%Y-%m-%d')}.ndjson"
    with path.open("ab") as f:
        for i in range(3):
            f.write(json.dumps(_builtins(score(now + i * 0.3, hot=False))).encode() + b"\n")
    until(page, f"document.querySelector('.chart').data[0].x.length >= {before + 3}")


def test_the_week_view_is_downsampled_on_the_server(page):
    page.get_by_role("button", name="week").click()
    shown = "document.querySelector('.chart').layout.xaxis.range"
    until(page, f"(r => new Date(r[1]) - new Date(r[0]))({shown}) > 6 * 86400 * 1000")
    assert page.evaluate("document.querySelector('.chart').data[0].y.length") <= 1000


def _builtins(s):
    import msgspec

    return msgspec.to_builtins(s)


# -- security, without the browser ----------------------------------------------------------------


def _request(d: Dashboard, path: str, body: dict | None = None, **headers: str):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(d.origin + path, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _login(d: Dashboard) -> str:
    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    opener = urllib.request.build_opener(NoRedirect)
    try:
        opener.open(d.link, timeout=10)
    except urllib.error.HTTPError as e:
        assert e.code == 303
        cookie = e.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie
    return cookie.split(";")[0]


def test_a_change_needs_the_login_cookie_and_the_pages_own_origin(dashboard):
    dismiss = {"alert": ALERT_OPEN, "verdict": "dismiss"}
    assert _request(dashboard, "/api/feedback", dismiss, Origin=dashboard.origin)[0] == 403
    cookie = _login(dashboard)
    elsewhere = _request(
        dashboard, "/api/feedback", dismiss, Cookie=cookie, Origin="http://evil.example"
    )
    assert elsewhere[0] == 403
    assert _request(dashboard, "/api/feedback", dismiss, Cookie=cookie)[0] == 403  # no Origin
    assert verdict_of(ALERT_OPEN) is None
    ok = _request(dashboard, "/api/feedback", dismiss, Cookie=cookie, Origin=dashboard.origin)
    assert ok[0] == 200 and verdict_of(ALERT_OPEN) == ("dismiss", 0, "dashboard")
    assert json.loads(ok[1])["lines"][0] == "alert b2b2b2 dismissed"


def test_the_login_link_works_once_and_data_needs_the_cookie(dashboard, kiri_home):
    assert _request(dashboard, "/api/alerts")[0] == 403
    cookie = _login(dashboard)
    assert _request(dashboard, f"/?login={dashboard.code}")[0] == 403  # used up
    assert _request(dashboard, "/api/alerts", Cookie=cookie)[0] == 200
    assert _request(dashboard, "/api/alerts", Cookie=cookie, Host="rebound.example")[0] == 400
    token = kiri_home / "dashboard.token"
    assert token.stat().st_mode & 0o777 == 0o600 and token.read_text().strip() in cookie


def test_no_secret_reaches_a_page(home, kiri_home, monkeypatch):
    token = kiri_home / "telegram.token"
    token.write_text("123456:SECRET-telegram-token\n")
    token.chmod(0o600)
    monkeypatch.setenv("HOOK_SECRET", "SECRET-of-the-webhook")
    (kiri_home / "config.toml").write_text(
        f'[telegram]\nchat_id = 1\ntoken_file = "{token}"\n'
        '[webhook]\nurl = "https://hooks.example/x"\nsecret_env = "HOOK_SECRET"\n'
    )
    d = Dashboard()
    try:
        cookie = _login(d)
        pages = ["/", "/static/app.js", "/api/alerts", "/api/rules", "/api/atoms",
                 "/api/chart?atom=pulse&span=hour"]  # fmt: skip
        for path in pages:
            status, text = _request(d, path, Cookie=cookie)
            assert status == 200 and "SECRET" not in text and "config.toml" not in text, path
    finally:
        d.stop()


def test_another_address_than_127_0_0_1_is_said_on_stderr(home):
    d = Dashboard("--listen", "127.0.0.2")
    assert d.origin.startswith("http://127.0.0.2:")
    assert "warning: the dashboard listens on 127.0.0.2" in d.stderr()


def test_a_port_in_use_is_a_one_line_error(home):
    d = Dashboard()
    try:
        port = d.origin.rsplit(":", 1)[1]
        out = subprocess.run(
            stage_cmd("kiri.cli", "dashboard", "--port", port),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    finally:
        d.stop()
    assert out.returncode == 1
    assert out.stderr.startswith(f"Error: cannot listen on 127.0.0.1:{port}")


# -- the recorded scores, read ---------------------------------------------------------------------


def test_a_series_keeps_the_most_surprising_score_of_each_bucket(kiri_home):
    end = time.time()
    write_scores(kiri_home, end, 3 * 3600, 1.0, hot=((1000.0, 999.0),))
    found = scores.series("pulse", end - 3 * 3600, end, buckets=500)["vm"]
    assert 490 <= len(found.ts) <= 501 and found.ts == sorted(found.ts)
    assert found.surprise.count(12.0) in (1, 2)  # the two hot seconds: one bucket or two
    assert max(found.surprise) == 12.0


def test_reading_from_a_time_starts_at_the_first_score_at_or_after_it(kiri_home):
    end = time.time()
    write_scores(kiri_home, end, 3600, 1.0, hot=())
    for ago in (3599.5, 1800.2, 10.0):
        got = next(scores.points("pulse", end - ago, end))
        assert end - ago <= got.ts < end - ago + 1.0


def test_the_atoms_and_stages_are_read_from_the_weights_and_status_json(
    browser, installed_pulse, home, kiri_home
):
    import msgspec

    from kiri.atoms.detector import Detector
    from kiri.home.status import StageStatus, Status

    stages = [
        StageStatus("collect", "running", pid=11, rss=30 << 20),
        StageStatus("atom", "backoff"),
    ]
    now = time.time()
    status = Status(os.getpid(), "pulse", "pulse.toml", now, now, stages)
    (kiri_home / "status.json").write_bytes(msgspec.json.encode(status))
    d = Dashboard()
    try:
        pg = browser.new_page()
        pg.goto(d.link)
        pg.wait_for_selector("body[data-ready='1']")
        cells = pg.locator("#atoms tbody tr").first.locator("td").all_inner_texts()
        stage_rows = [
            r.locator("td").all_inner_texts()[:3] for r in pg.locator("#stages tbody tr").all()
        ]
        pg.close()
    finally:
        d.stop()
    cal = Detector.load(installed_pulse).calibration
    assert cells[0] == "pulse" and cells[2] == f"{cal.threshold:.3f}"
    assert re.fullmatch(
        rf"trained \d{{4}}-\d\d-\d\d \d\d:\d\d on {cal.observations} observations.*", cells[1]
    )
    assert stage_rows == [["collect", "running", "11"], ["atom", "backoff", "–"]]
