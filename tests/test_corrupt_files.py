"""A damaged kiri.db or config.toml: every command that opens it says so in one `Error:` line
naming the file, with exit status 1 (2 for a config.toml that is wrong), never a traceback."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import stage_cmd

from kiri.home.store import VERSION, Store, db_path

# -- kiri.db --------------------------------------------------------------------------------

DECISION = (
    '{"kind":"decision","id":"a1","atom":"pulse","host":"vm","action":"alert",'
    '"culprits":[["C9",9.0]],"threshold":1.0,"summary":"CPU 99%"}'
)


def _good(path: Path) -> bytes:
    """A KIRI store with an alert and a verdict in it, as bytes."""
    with Store(path) as store:
        with store.db:  # enough rows for the tables to span several pages
            for i in range(200):
                store.db.execute(
                    "INSERT INTO alerts (id, ts, atom, host, action, incident, summary, pattern,"
                    " decision) VALUES (?, ?, 'pulse', 'vm', 'alert', '', ?, 'C9', '{}')",
                    (f"a{i}", 1000.0 + i, "x" * 500),
                )
        store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path.read_bytes()


def _sql(*statements: str) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        path.write_bytes(_good(path))
        db = sqlite3.connect(path)
        db.executescript(";".join(statements))
        db.close()

    return corrupt


def _bytes(edit: Callable[[bytes], bytes]) -> Callable[[Path], None]:
    def corrupt(path: Path) -> None:
        path.write_bytes(edit(_good(path)))

    return corrupt


def _put(data: bytes, at: int) -> Callable[[bytes], bytes]:
    return lambda good: good[:at] + data + good[at + len(data) :]


def _directory(path: Path) -> None:
    path.mkdir()


def _unreadable(path: Path) -> None:
    path.write_bytes(_good(path))
    path.chmod(0o000)


def _other_program(path: Path) -> None:
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE alerts (name TEXT, price INTEGER); PRAGMA user_version = 1")
    db.close()


DB_CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated to its header": _bytes(lambda good: good[:100]),
    "truncated to half": _bytes(lambda good: good[: len(good) // 2]),
    "truncated mid-page": _bytes(lambda good: good[: 4096 + 1000]),
    "random bytes in the header": _bytes(_put(os.urandom(16), 0)),
    "a bad page size": _bytes(_put(b"\x00\x07", 16)),
    "garbage in the schema page": _bytes(_put(b"\xff" * 2000, 200)),
    "garbage in a table page": _bytes(lambda good: good[:8192] + b"\xa5" * 4096 + good[12288:]),
    "a text file": _bytes(lambda _: b"these are my notes, not a database\n" * 100),
    "random bytes": _bytes(lambda _: os.urandom(8192)),
    "a gzip file": _bytes(lambda _: b"\x1f\x8b\x08\x00" + os.urandom(4000)),
    "a directory in its place": _directory,
    "unreadable": _unreadable,
    "a missing table": _sql("DROP TABLE verdicts"),
    "a missing column": _sql("ALTER TABLE alerts DROP COLUMN summary"),
    "a table of the wrong columns": _sql(
        "DROP TABLE rules", "CREATE TABLE rules (id TEXT, what BLOB)"
    ),
    "a column of the wrong type": _sql(
        "ALTER TABLE telegram_messages RENAME TO old",
        "CREATE TABLE telegram_messages (alert TEXT PRIMARY KEY, incident TEXT, action TEXT,"
        " chat TEXT, message TEXT, text TEXT, ts TEXT)",
    ),
    "a view in place of a table": _sql("DROP TABLE state", "CREATE VIEW state AS SELECT 1"),
    "a newer schema version": _sql(f"PRAGMA user_version = {VERSION + 1}"),
    "a far newer schema version": _sql("PRAGMA user_version = 2147483647"),
    "a negative schema version": _sql("PRAGMA user_version = -3"),
    "another program's database": _other_program,
}


def _run(argv: list[str], stdin: bytes = b"") -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def _all(commands: dict[str, tuple[list[str], bytes]]) -> dict[str, tuple[int, str]]:
    """Run the commands at once (the machine has few cores, the tests many cases): each one's
    exit status and stderr."""
    procs = {name: (_run(argv), stdin) for name, (argv, stdin) in commands.items()}
    done = {}
    for name, (proc, stdin) in procs.items():
        _, err = proc.communicate(stdin, timeout=60)
        done[name] = (proc.returncode, err.decode(errors="replace"))
    return done


def _assert_one_error(results: dict[str, tuple[int, str]], path: Path, status: int) -> None:
    for name, (code, err) in results.items():
        assert "Traceback" not in err, f"{name}:\n{err}"
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert code == status and len(errors) == 1, f"{name} exited {code}:\n{err}"
        assert str(path) in errors[0] or path.name in errors[0], f"{name}: {errors[0]}"


DB_COMMANDS = {
    "kiri-decide": (stage_cmd("kiri.decide.stage"), DECISION.encode() + b"\n"),
    "kiri-feedback": (stage_cmd("kiri.feedback.stage"), DECISION.encode() + b"\n"),
    "kiri alerts": (stage_cmd("kiri.cli", "alerts"), b""),
    "kiri feedback": (stage_cmd("kiri.cli", "feedback", "confirm", "a1"), b""),
}


@pytest.mark.parametrize("corrupt", list(DB_CORRUPTIONS.values()), ids=list(DB_CORRUPTIONS))
def test_a_corrupt_store_is_one_error_naming_it(kiri_home, corrupt):
    kiri_home.mkdir(parents=True, exist_ok=True)
    if corrupt is _unreadable and os.geteuid() == 0:
        pytest.skip("root reads any file")
    path = db_path()
    corrupt(path)
    _assert_one_error(_all(DB_COMMANDS), path, 1)


def test_a_newer_store_says_which_version_it_found_and_which_kiri_knows(kiri_home):
    kiri_home.mkdir(parents=True)
    DB_CORRUPTIONS["a newer schema version"](db_path())
    for _code, err in _all(DB_COMMANDS).values():
        assert f"schema version {VERSION + 1}, newer than this KIRI understands ({VERSION})" in err


def test_an_empty_store_file_is_a_new_store(kiri_home):
    kiri_home.mkdir(parents=True)
    db_path().write_bytes(b"")
    out = subprocess.run(stage_cmd("kiri.cli", "alerts"), capture_output=True, check=False)
    assert out.returncode == 0 and out.stdout == b"no alerts yet\n", out.stderr


# -- config.toml ----------------------------------------------------------------------------

DEEP = "a = " + "[" * 2000 + "]" * 2000
CONFIG_CORRUPTIONS: dict[str, bytes | str] = {
    "bad TOML": "[webhook\nurl = 1",
    "an unclosed string": '[webhook]\nurl = "http://x',
    "a duplicate key": '[webhook]\nurl = "http://a"\nurl = "http://b"',
    "a duplicate table": '[webhook]\nurl = "http://a"\n[webhook]\nurl = "http://b"',
    "non-UTF-8": b'[webhook]\nurl = "http://\xff\xfe"\n',
    "a NUL byte": b'[webhook]\nurl = "http://a\x00"\n',
    "a UTF-16 file": '[webhook]\nurl = "http://a"\n'.encode("utf-16"),
    "binary garbage": bytes(range(256)) * 4,
    "an unknown section": "[webhok]\nurl = 'http://a'",
    "an unknown key": "[webhook]\nurl = 'http://a'\nsecert_env = 'X'",
    "a section that is a string": 'webhook = "http://a"',
    "a section that is an array": "webhook = [1, 2]",
    "a section that is an array of tables": "[[webhook]]\nurl = 'http://a'",
    "a URL of the wrong type": "[webhook]\nurl = 42",
    "a URL that is no URL": "[webhook]\nurl = 'not a url'",
    "a timeout of the wrong type": "[webhook]\nurl = 'http://a'\ntimeout = 'soon'",
    "a negative timeout": "[webhook]\nurl = 'http://a'\ntimeout = -1",
    "an infinite timeout": "[webhook]\nurl = 'http://a'\ntimeout = inf",
    "a nan timeout": "[webhook]\nurl = 'http://a'\ntimeout = nan",
    "a huge chat id": "[telegram]\nchat_id = 99999999999999999999999\ntoken_env = 'T'",
    "a huge integer": "[webhook]\nurl = 'http://a'\ntimeout = " + "9" * 5000,
    "a date for a number": "[webhook]\nurl = 'http://a'\ntimeout = 1979-05-27",
    "a telegram without a token": "[telegram]\nchat_id = 1",
    "a telegram chat id that is text": "[telegram]\nchat_id = 'me'\ntoken_env = 'T'",
    "allowed ids that are not numbers": "[telegram]\nchat_id = 1\ntoken_env = 'T'\n"
    "allowed_ids = ['x']",
    "plain-http Telegram API": "[telegram]\nchat_id = 1\ntoken_env = 'T'\n"
    "api_url = 'http://api.example.com'",
    "mikrotik with ca and insecure": "[mikrotik]\nca = 'a.pem'\ninsecure = true",
    "mikrotik insecure as text": "[mikrotik]\ninsecure = 'yes'",
    "rhythm repos as a string": "[rhythm]\nrepos = '/src'",
    "an atom name with a slash": "[atoms.'a/b']\ncommand = ['x']",
    "an atom that is a number": "atoms = { gpu = 1 }",
    "an atom command that is a string": "[atoms.gpu]\ncommand = 'nvidia-smi'",
    "an atom with an empty command": "[atoms.gpu]\ncommand = []",
    "an atom field with lo above hi": "[atoms.gpu.fields]\ntemp = { lo = 100, hi = 0 }",
    "an atom field with huge levels": "[atoms.gpu.fields]\ntemp = { lo = 0, hi = 1, levels = "
    + "9" * 30
    + " }",
    "an atom field that is a number": "[atoms.gpu.fields]\ntemp = 3",
    "an atom field name with a space": "[atoms.gpu.fields]\n'a b' = 'auto'",
    "an atom clock that is not a clock": "[atoms.gpu]\nclock = ['minute']",
    "nested too deep": DEEP,
    "tables nested too deep": "[" + ".".join(["a"] * 3000) + "]",
    "a directory in its place": "",
}


def _write_config(path: Path, content: bytes | str, name: str) -> None:
    if name == "a directory in its place":
        path.mkdir()
    else:
        path.write_bytes(content if isinstance(content, bytes) else content.encode())


CONFIG_COMMANDS = {
    "kiri-decide": (stage_cmd("kiri.decide.stage"), b""),
    "kiri-feedback": (stage_cmd("kiri.feedback.stage"), b""),
    "kiri-act": (stage_cmd("kiri.act.stage", "--sink", "log"), b""),
    "kiri alerts": (stage_cmd("kiri.cli", "alerts"), b""),
}


@pytest.mark.parametrize("i, name", list(enumerate(CONFIG_CORRUPTIONS)))
def test_a_corrupt_config_is_one_usage_error_naming_it(kiri_home, i, name):
    """Every command reads config.toml the same way (kiri.wire.stream.run_main): each variant is
    given to two of them in turn, so every command meets a good share of the variants."""
    kiri_home.mkdir(parents=True)
    path = kiri_home / "config.toml"
    _write_config(path, CONFIG_CORRUPTIONS[name], name)
    commands = list(CONFIG_COMMANDS.items())
    pair = dict(commands[i % len(commands) :][:1] + commands[(i + 1) % len(commands) :][:1])
    _assert_one_error(_all(pair), path, 2)
