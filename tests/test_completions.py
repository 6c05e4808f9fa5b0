"""Shell completions in completions/ are generated from the app and must be up to date."""

import shutil
import subprocess
from pathlib import Path

import pytest

from cfgdiff.cli.completions import SHELLS, scripts

FOLDER = Path(__file__).resolve().parents[1] / "completions"


def test_completion_files_are_up_to_date():
    for name, text in scripts().items():
        path = FOLDER / name
        assert path.exists(), f"{path} missing: run python -m cfgdiff.cli.completions write completions/"
        assert path.read_text() == text, f"{path} is stale: run python -m cfgdiff.cli.completions write completions/"


def _bash_complete(words: list[str]) -> list[str]:
    script = FOLDER / SHELLS["bash"]
    line = " ".join(words)
    cmd = (f'source "{script}"; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _cfgdiff; '
           'printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_bash_completes_commands_and_options():
    assert {"sample", "sweep", "plugins"} <= set(_bash_complete(["cfgdiff", ""]))
    assert _bash_complete(["cfgdiff", "sw"]) == ["sweep"]
    assert "--keep-samples" in _bash_complete(["cfgdiff", "sweep", "--k"])


@pytest.mark.parametrize("shell,flag", [("zsh", "-n"), ("fish", "--no-execute")])
def test_other_shells_parse_their_scripts(shell, flag):
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    r = subprocess.run([shell, flag, str(FOLDER / SHELLS[shell])], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
