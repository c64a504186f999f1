"""Shell completion (argcomplete): each command answers the shell's request with its
subcommands and options, and the bash script bin/kiri installs completes them in bash."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

REGISTER = Path(sys.executable).parent / "register-python-argcomplete"


def completions(module: str, line: str, tmp_path: Path) -> list[str]:
    """What the command offers for `line`, asked as argcomplete's shell function asks."""
    answer = tmp_path / "answer"
    env = {
        **os.environ,
        "_ARGCOMPLETE": "1",
        "_ARGCOMPLETE_IFS": "\n",
        "COMP_LINE": line,
        "COMP_POINT": str(len(line)),
        "_ARGCOMPLETE_STDOUT_FILENAME": str(answer),
    }
    out = subprocess.run(
        [sys.executable, "-m", module], env=env, capture_output=True, timeout=30, check=False
    )
    assert out.returncode == 0, out.stderr
    return [word.strip() for word in answer.read_text().split("\n")]


def test_kiri_completes_its_commands_and_their_options(tmp_path):
    commands = completions("kiri.cli", "kiri ", tmp_path)
    assert {"alerts", "feedback", "rules", "prune", "status", "task", "train"} <= set(commands)
    assert completions("kiri.cli", "kiri fe", tmp_path) == ["feedback"]
    assert {"confirm", "dismiss"} <= set(completions("kiri.cli", "kiri feedback ", tmp_path))
    assert "--normal" in completions("kiri.cli", "kiri feedback dismiss --", tmp_path)
    assert "delete" in completions("kiri.cli", "kiri rules ", tmp_path)
    assert not (tmp_path / "kiri-home").exists()  # asking makes nothing


def test_each_stage_completes_its_options(tmp_path):
    assert "--feedback" in completions("kiri.decide.stage", "kiri-decide --", tmp_path)
    assert "--check" in completions("kiri.supervise.supervisor", "kiri-supervise --", tmp_path)


@pytest.mark.skipif(not shutil.which("bash"), reason="bash is not installed")
def test_the_installed_bash_script_completes_kiri(tmp_path):
    script = subprocess.run(
        [str(REGISTER), "--shell", "bash", "kiri"], capture_output=True, check=True, text=True
    ).stdout
    (tmp_path / "kiri.bash").write_text(script)
    kiri = tmp_path / "bin" / "kiri"  # a `kiri` that runs this checkout, as bin/kiri does
    kiri.parent.mkdir()
    kiri.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m kiri.cli "$@"\n')
    kiri.chmod(0o755)
    probe = f"""
        source {tmp_path / "kiri.bash"}
        COMP_LINE="kiri ta"; COMP_POINT=${{#COMP_LINE}}; COMP_WORDS=(kiri ta); COMP_CWORD=1
        _python_argcomplete kiri ta kiri
        printf '%s\\n' "${{COMPREPLY[@]}}"
    """
    env = {**os.environ, "PATH": f"{kiri.parent}:{os.environ['PATH']}"}
    out = subprocess.run(
        ["bash", "-c", probe], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert out.stdout.split() == ["task"], out.stderr


def test_bin_kiri_installs_the_scripts_for_bash_and_zsh():
    text = (ROOT / "bin" / "kiri").read_text()
    assert 'register-python-argcomplete"' in text and "install_completions ||" in text
    assert "--shell bash" in text and "--shell zsh" in text
