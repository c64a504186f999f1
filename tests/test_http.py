"""kiri/clients/http.py against a real HTTP server on 127.0.0.1: statuses, retries, limits,
secrets."""

import socket

import pytest
from scripted_http import Answer, scripted_server

from kiri.clients.http import HttpError, post_json, request, retrying
from kiri.wire.redact import redact, url_secrets


@pytest.fixture
def server():
    with scripted_server() as (where, handler):
        yield f"http://{where}", handler


def test_a_posted_json_body_arrives_and_the_answer_is_read(server):
    url, h = server
    h.script.append(Answer(200, b'{"ok":true}'))
    assert post_json(url + "/hook", {"a": 1}).json() == {"ok": True}
    assert [(r.method, r.path, r.body) for r in h.seen] == [("POST", "/hook", b'{"a":1}')]


def test_429_waits_as_asked_then_succeeds_and_404_is_not_retried(server):
    url, h = server
    h.script += [
        Answer(429, headers={"Retry-After": "2"}),
        Answer(429, b'{"ok":false,"parameters":{"retry_after":3}}'),
        Answer(200, b"{}"),
    ]
    waits: list[float] = []
    assert (
        retrying(lambda: request("GET", url + "/x"), attempts=3, sleep=waits.append).status == 200
    )
    assert waits == [2.0, 3.0]
    h.script.append(Answer(404, b'{"description":"Not Found: method not found"}'))
    with pytest.raises(HttpError, match="GET /x: HTTP 404 Not Found: method not found") as e:
        retrying(lambda: request("GET", url + "/x"), sleep=waits.append)
    assert e.value.status == 404 and waits == [2.0, 3.0]


def test_server_errors_back_off_doubling_then_the_last_error_is_raised(server):
    url, h = server
    h.script += [Answer(503, b"busy")] * 3
    waits: list[float] = []
    with pytest.raises(HttpError, match="HTTP 503 busy"):
        retrying(lambda: request("GET", url + "/y"), attempts=3, backoff=0.5, sleep=waits.append)
    assert waits == [0.5, 1.0]


def test_no_server_a_huge_answer_and_the_query_string_stay_out_of_errors(server):
    url, h = server
    h.script.append(Answer(200, b"x" * 2048))
    with pytest.raises(HttpError, match="answer of 2048 bytes, larger than 1024"):
        request("GET", url + "/big?token=s3cret", max_body=1024)
    with pytest.raises(HttpError) as e:
        request("GET", "http://127.0.0.1:9/hook?token=s3cret", timeout=2)
    assert e.value.status == 0 and e.value.transient
    assert str(e.value).startswith("GET /hook: ") and "s3cret" not in str(e.value)
    with pytest.raises(HttpError) as e:  # a secret in the path: the caller names the request
        request("GET", "http://127.0.0.1:9/bot123:s3cret/getMe", timeout=2, name="getMe")
    assert str(e.value).startswith("getMe: ") and "s3cret" not in str(e.value)


def test_a_malformed_url_is_a_refusal_whose_message_holds_no_secret_of_it():
    url = "http://me:pw0rd9@127.0.0.1:9/hook/S3CRET x?key=qs3cret"
    with pytest.raises(HttpError) as e:
        request("POST", url, name="POST to 127.0.0.1:9", secrets=["signing-key-1"], timeout=2)
    assert str(e.value).startswith("POST to 127.0.0.1:9: invalid URL: ")
    assert not e.value.transient  # the same URL will not work next time either
    assert not any(s in str(e.value) for s in ("pw0rd9", "S3CRET", "qs3cret"))
    with pytest.raises(HttpError) as e:
        request("GET", "http://127.0.0.1:9/bot123:s3cret\n/getMe", name="getMe", timeout=2)
    assert "s3cret" not in str(e.value) and "***" in str(e.value)


def test_redact_hides_a_secret_as_it_is_quoted_and_leaves_short_words_alone():
    secrets = ["hook/S3C\tRET", "abc"]
    assert redact("at 'hook/S3C\\tRET' and hook/S3C%09RET: abc", secrets) == (
        "at '***' and ***: abc"
    )
    assert url_secrets("https://u:pw@h.example/p/t0k?q=1#f") == [
        "u:pw",
        "pw",
        "q=1",
        "f",
        "p/t0k",
        "p/t0k?q=1#f",
    ]
    assert url_secrets("https://h.example/api/v2/alerts", path=False) == []


def test_a_redirect_is_followed_to_the_same_server_only(server):
    url, h = server
    with scripted_server() as (elsewhere, other):
        h.script += [
            Answer(302, headers={"Location": "/moved"}),
            Answer(200, b"here"),
            Answer(307, headers={"Location": f"http://{elsewhere}/hook"}),
        ]
        assert request("GET", url + "/x", headers={"Authorization": "Basic c2VjcmV0"}).body == (
            b"here"
        )
        with pytest.raises(HttpError, match="GET /x: HTTP 307 redirects to another server") as e:
            request("GET", url + "/x", headers={"Authorization": "Basic c2VjcmV0"})
        assert e.value.status == 307 and not e.value.transient
        assert other.seen == []  # the Authorization header went nowhere else
    assert [r.path for r in h.seen] == ["/x", "/moved", "/x"]


def test_a_long_error_answer_keeps_its_status_and_a_slow_one_names_the_timeout(server):
    url, h = server
    h.script.append(Answer(404, b"<html>" + b"x" * 10_000))
    with pytest.raises(HttpError, match=r"GET /x: HTTP 404 <html>x+$") as e:
        request("GET", url + "/x")
    assert e.value.status == 404 and not e.value.transient
    silent = socket.create_server(("127.0.0.1", 0))  # takes connections, never answers
    with silent, pytest.raises(HttpError, match=r"^GET /x: no answer within 0.2 s$") as e:
        request("GET", f"http://127.0.0.1:{silent.getsockname()[1]}/x", timeout=0.2)
    assert e.value.status == 0 and e.value.transient
