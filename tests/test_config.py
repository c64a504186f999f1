"""config.toml: decoded once, in one place, and a mistake in it stops every stage at its start."""

import json
import sys
from argparse import Namespace
from pathlib import Path

import pytest
from conftest import FIXTURES, ROOT, fixture_bytes, log_events, run

from kiri.collect.mikrotik import configured_router
from kiri.collect.rhythm import repositories
from kiri.collect.stage import build_parser
from kiri.home.config import (
    AtomSection,
    Config,
    ConfigError,
    FixedField,
    InvalidConfigError,
    RhythmSection,
    clear_config_cache,
    load_config,
    setting,
)
from kiri.wire.errors import KiriError

TYPO = "config.toml: [webhook] unknown key 'secert_env' (did you mean 'secret_env'?)"
TYPO_CONFIG = '[webhook]\nurl = "https://hooks.example.org/kiri"\nsecert_env = "KIRI_SECRET"\n'
METRICS = str(FIXTURES / "exec" / "metrics.py")


def write(home: Path, text: str) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.toml"
    path.write_text(text)
    return path


def error(home: Path, text: str) -> str:
    with pytest.raises(InvalidConfigError) as raised:
        load_config(write(home, text))
    return str(raised.value)


# -- what a mistake says ----------------------------------------------------------------------


def test_an_unknown_key_names_the_section_the_key_and_the_nearest_known_one(kiri_home):
    assert error(kiri_home, TYPO_CONFIG) == TYPO


def test_an_unknown_key_with_nothing_close_is_named_alone(kiri_home):
    assert error(kiri_home, '[alertmanager]\nurl = "http://am:9093"\nflavour = "mint"\n') == (
        "config.toml: [alertmanager] unknown key 'flavour'"
    )


def test_an_unknown_section_names_the_nearest_known_one(kiri_home):
    assert error(kiri_home, '[webhok]\nurl = "https://hooks.example.org/"\n') == (
        "config.toml: unknown section [webhok] (did you mean [webhook]?)"
    )
    assert error(kiri_home, "[grafana]\nurl = 1\n") == "config.toml: unknown section [grafana]"


def test_a_key_of_an_atom_and_of_its_fields_is_checked_too(kiri_home):
    assert error(kiri_home, '[atoms.gpu]\ncomand = ["nvidia-smi-json"]\n') == (
        "config.toml: [atoms.gpu] unknown key 'comand' (did you mean 'command'?)"
    )
    assert error(kiri_home, "[atoms.gpu.fields]\ntemp = { lo = 0, hi = 100, levls = 5 }\n") == (
        "config.toml: atoms.gpu.fields.temp: unknown key 'levls' (did you mean 'levels'?)"
    )


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[webhook]\nurl = "https://hooks.example.org/"\ntimeout = "soon"\n',
            "config.toml: [webhook] timeout: ",
        ),
        (
            '[telegram]\ntoken_env = "T"\nchat_id = "me"\n',
            "config.toml: [telegram] chat_id: ",
        ),
        (
            '[rhythm]\nrepos = ["~/src", 7]\n',
            "config.toml: [rhythm] repos[1]: ",
        ),
        (
            "[mikrotik]\ninsecure = 1\n",
            "config.toml: [mikrotik] insecure: ",
        ),
        (
            '[atoms.gpu]\ninterval = "30s"\n',
            "config.toml: [atoms.gpu] interval: ",
        ),
        ("webhook = 3\n", "config.toml: webhook must be a table, not `int`"),
        ("[webhook]\ntimeout = 3\n", "config.toml: [webhook] missing required key 'url'"),
    ],
)
def test_a_value_of_the_wrong_type_is_one_line_naming_the_section_and_key(kiri_home, text, message):
    said = error(kiri_home, text)
    # KIRI's part is the file, the section and the key; the reason after it is msgspec's
    assert "\n" not in said
    if message.endswith(": "):
        assert said.startswith(message)
        assert said.removeprefix(message).strip()
    else:
        assert said == message


@pytest.mark.parametrize(
    "text, message",
    [
        (
            '[alertmanager]\nurl = "http://am:9093"\nresend = 0\n',
            "config.toml: [alertmanager] resend must be a number of seconds above 0, not 0",
        ),
        (
            '[alertmanager]\nurl = "am:9093"\n',
            "config.toml: [alertmanager] url must be an http:// or https:// URL",
        ),
        (
            '[mikrotik]\nca = "router.pem"\ninsecure = true\n',
            "config.toml: [mikrotik] give ca or insecure, not both",
        ),
        ("[telegram]\nchat_id = 1\n", "config.toml: [telegram] no bot token: give token_env"),
        ("[atoms.gpu]\ncommand = []\n", "config.toml: [atoms.gpu] command must be the command"),
        (
            "[atoms.gpu.fields]\ntemp = { lo = 100, hi = 20 }\n",
            "config.toml: atoms.gpu.fields.temp: lo and hi must be numbers, lo < hi",
        ),
        ('[atoms."GPU 0"]\ninterval = 5\n', "config.toml: invalid atom name 'GPU 0'"),
    ],
)
def test_a_value_that_makes_no_sense_is_named_with_its_section(kiri_home, text, message):
    assert error(kiri_home, text).startswith(message)


def test_a_file_that_is_not_toml_is_named_by_its_path(kiri_home):
    path = write(kiri_home, "[webhook\n")
    with pytest.raises(InvalidConfigError, match=f"^{path}: "):
        load_config(path)


def test_a_mistake_in_the_file_is_a_usage_error_and_a_missing_secret_is_not(kiri_home):
    with pytest.raises(ConfigError) as raised:
        load_config(write(kiri_home, TYPO_CONFIG))
    assert isinstance(raised.value, KiriError) and raised.value.status == 2
    assert ConfigError("a secret that is not set").status == 1


# -- what a good file gives -------------------------------------------------------------------

FULL = """
[telegram]
token_env = "KIRI_TELEGRAM_TOKEN"
chat_id = 123456789
allowed_ids = [123456789, -100200300]
api_url = "http://127.0.0.1:8081/"

[webhook]
url = "https://hooks.example.org/kiri/"
secret_file = "~/.kiri/webhook.secret"
timeout = 5

[alertmanager]
url = "http://127.0.0.1:9093"
generator_url = "https://kiri.example.org/alerts/{id}"
resend = 30
timeout = 2.5

[mikrotik]
url = "https://192.168.88.1"
user = "kiri"
password_env = "KIRI_ROUTER_PASSWORD"
ca = "~/.kiri/router.pem"

[rhythm]
repos = ["~/src/kiri", "~/notes"]

[atoms.gpu]
command = ["nvidia-smi-json", "--all"]
interval = 30
timeout = 4
[atoms.gpu.fields]
temp = { lo = 20, hi = 100, levels = 8, label = "GPU temperature", unit = "C" }
util = "auto"
hour = { lo = 0, hi = 24, levels = 24, context = true }

[atoms.backup]
command = ["backup-stats"]
"""


def test_a_full_config_decodes_with_every_key_in_place(kiri_home):
    config = load_config(write(kiri_home, FULL))
    assert config.telegram is not None and config.telegram.chat_id == 123456789
    assert config.telegram.allowed_ids == [123456789, -100200300]
    assert config.telegram.api_url == "http://127.0.0.1:8081"  # loopback: plain http is fine
    assert config.webhook is not None and config.webhook.url == "https://hooks.example.org/kiri"
    assert (config.webhook.secret_file, config.webhook.timeout) == ("~/.kiri/webhook.secret", 5.0)
    assert config.alertmanager is not None
    assert (config.alertmanager.resend, config.alertmanager.timeout) == (30.0, 2.5)
    assert config.mikrotik is not None and config.mikrotik.user == "kiri"
    assert config.mikrotik.insecure is False
    assert config.rhythm is not None and config.rhythm.repos == ["~/src/kiri", "~/notes"]
    gpu = config.atoms["gpu"]
    assert (gpu.command, gpu.interval, gpu.timeout) == (["nvidia-smi-json", "--all"], 30.0, 4.0)
    assert gpu.fields is not None and gpu.fields["util"] == "auto"
    assert gpu.fields["temp"] == FixedField(
        lo=20, hi=100, levels=8, label="GPU temperature", unit="C"
    )
    assert gpu.fields["hour"] == FixedField(lo=0, hi=24, levels=24, context=True)
    assert config.atoms["backup"] == AtomSection(command=["backup-stats"])


def test_what_is_left_out_takes_the_defaults(kiri_home):
    config = load_config(write(kiri_home, '[webhook]\nurl = "https://h.example.org"\n[atoms.x]\n'))
    assert config.webhook is not None and config.webhook.timeout == 10.0
    assert config.webhook.secret_env is None and config.webhook.secret_file is None
    assert config.telegram is None and config.alertmanager is None and config.rhythm is None
    assert config.atoms["x"] == AtomSection()
    assert load_config(write(kiri_home / "am", "[alertmanager]\n")).alertmanager is not None
    assert FixedField(lo=0, hi=1).levels == 10


def test_no_config_toml_is_all_defaults(kiri_home):
    assert load_config() == Config()
    assert not (kiri_home / "config.toml").exists()


# -- read once --------------------------------------------------------------------------------


def test_the_file_is_read_once_per_process(kiri_home, monkeypatch):
    path = write(kiri_home, '[rhythm]\nrepos = ["~/one"]\n')
    reads = []
    read_text = Path.read_text

    def counted(self: Path, *args, **kwargs) -> str:
        reads.append(self)
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    first = load_config()
    path.write_text('[rhythm]\nrepos = ["~/two"]\n')
    assert load_config() is first and repositories(None) == [Path("~/one").expanduser()]
    assert reads == [path]
    clear_config_cache()
    assert load_config() is load_config(path)
    assert load_config() == Config(rhythm=RhythmSection(repos=["~/two"]))
    assert reads == [path, path]


# -- precedence: the command line, then config.toml, then the default --------------------------


def test_setting_takes_the_option_then_config_toml_then_the_default():
    assert setting(2.0, 3.0, 4.0) == 2.0
    assert setting(None, 3.0, 4.0) == 3.0
    assert setting(None, None, 4.0) == 4.0
    assert setting(0.0, 3.0, 4.0) == 0.0  # given is given, even when it is falsy


def test_rhythm_repositories_follow_the_rule(kiri_home):
    assert repositories(None) == []
    write(kiri_home, '[rhythm]\nrepos = ["/srv/configured"]\n')
    clear_config_cache()
    assert repositories(None) == [Path("/srv/configured")]
    assert repositories(["/srv/given"]) == [Path("/srv/given")]  # replaces the list


def mikrotik_args(*argv: str) -> Namespace:
    return build_parser().parse_args(["mikrotik", *argv])


def test_mikrotik_options_win_over_config_toml_and_url_names_another_router(kiri_home, monkeypatch):
    monkeypatch.setenv("KIRI_ROUTER_PASSWORD", "configured-secret")
    write(
        kiri_home,
        '[mikrotik]\nurl = "https://192.168.88.1"\nuser = "kiri"\n'
        'password_env = "KIRI_ROUTER_PASSWORD"\ninsecure = true\n',
    )
    router = configured_router(mikrotik_args())
    assert router is not None and (router.url, router.user) == ("https://192.168.88.1", "kiri")
    assert router.insecure and router.password == "configured-secret"
    router = configured_router(mikrotik_args("--user", "admin", "--ca", "mine.pem"))
    assert router is not None and (router.user, router.ca, router.insecure) == (
        "admin",
        "mine.pem",
        False,
    )
    # Another router: nothing of [mikrotik] goes to it, its password least of all.
    with pytest.raises(KiriError, match="no router user"):
        configured_router(mikrotik_args("--url", "https://10.0.0.1"))
    with pytest.raises(KiriError, match="no router password"):
        configured_router(mikrotik_args("--url", "https://10.0.0.1", "--user", "kiri"))


def exec_timeouts(kiri_home: Path, *argv: str) -> list[str]:
    """The reasons the runs of a command that never answers failed, timed out as configured."""
    pid = kiri_home / "hang.pid"
    command = json.dumps([sys.executable, METRICS, "hang", str(pid)])
    write(kiri_home, f"[atoms.slow]\ncommand = {command}\ninterval = 0.05\ntimeout = 0.4\n")
    out = run("kiri.collect.stage", "exec", "--atom", "slow", "--count", "1", *argv)
    assert out.returncode == 0, out.stderr
    return [e["reason"] for e in log_events(out.stderr) if e["event"] == "run_failed"]


def test_exec_takes_the_timeout_option_over_the_atoms_own(kiri_home):
    assert exec_timeouts(kiri_home) == ["timed out after 0.4 s"]
    assert exec_timeouts(kiri_home, "--timeout", "0.2") == ["timed out after 0.2 s"]


# -- every stage checks it before it starts -----------------------------------------------------

STAGES = [
    ("kiri.act.stage", "--sink", "log"),
    ("kiri.decide.stage",),
    ("kiri.collect.stage", "replay", "-"),
    ("kiri.collect.stage", "pulse", "--count", "1"),
    ("kiri.score.stage", "pulse"),
    ("kiri.feedback.stage",),
    ("kiri.supervise.supervisor", "--check", str(ROOT / "pipelines" / "pulse.toml")),
    ("kiri.cli", "info", "pulse"),
    ("kiri.cli", "act", "--sink", "log"),
]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: " ".join(s[:2]))
def test_a_stage_given_a_mistake_exits_2_with_one_line_and_outputs_nothing(stage, kiri_home):
    write(kiri_home, TYPO_CONFIG)
    out = run(*stage, input=fixture_bytes("kinds.ndjson"))
    assert (out.returncode, out.stdout) == (2, b"")
    assert out.stderr.decode() == f"Error: {TYPO}\n"


def test_a_stage_given_a_good_config_runs(kiri_home):
    write(kiri_home, FULL)
    out = run("kiri.act.stage", "--sink", "log", input=fixture_bytes("kinds.ndjson"))
    assert out.returncode == 0 and out.stdout, out.stderr
