"""Shell completions in completions/ are generated from the app and must be up to date."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from cfgdiff.cli.completions import SHELLS, scripts

FOLDER = Path(__file__).resolve().parents[2] / "completions"


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


# ---- values, whole descriptions, and the README's zsh recipe in a real zsh ------------------------------------------
def test_bash_completes_the_values_of_options_with_choices():
    assert _bash_complete(["cfgdiff", "train", "--preset", ""]) == ["adm64", "cifar32", "tiny"]
    assert _bash_complete(["cfgdiff", "prepare", "--resize", "c"]) == ["center-crop-adm"]
    assert _bash_complete(["cfgdiff", "score", "--fid-method", ""]) == ["eigh", "sqrtm"]
    assert _bash_complete(["cfgdiff", "train", "--grid", ""]) == ["paper", "linear", "edm"]
    assert "dpmpp-2m" in _bash_complete(["cfgdiff", "train", "--sampler", ""])
    assert _bash_complete(["cfgdiff", "train", "--kimg", ""]) == []  # a number: no file names offered


def test_every_option_with_a_fixed_set_offers_it_and_descriptions_are_whole():
    import typer

    from cfgdiff.cli.app import build_app
    from cfgdiff.cli.completions import command_tree

    fixed = {("prepare", "--resize"), ("prepare", "--preset"), ("train", "--preset"), ("train", "--sampler"),
             ("train", "--grid"), ("train", "--log"), ("score", "--metrics"), ("score", "--fid-method")}
    app, _ = build_app()
    helps = {(name, p.opts[0]): " ".join((p.help or "").split())
             for name, c in typer.main.get_command(app).commands.items() for p in c.params if p.opts}
    seen = set()
    zsh_script = (FOLDER / SHELLS["zsh"]).read_text()
    fish_script = (FOLDER / SHELLS["fish"]).read_text()
    for cmd in command_tree():
        for opt in cmd.options:
            for flag in opt.flags:
                if (cmd.name, flag) in fixed:
                    seen.add((cmd.name, flag))
                    assert opt.choices, (cmd.name, flag)
                    assert f":({' '.join(opt.choices)})'" in zsh_script
                    assert f"-x -a '{' '.join(opt.choices)}'" in fish_script
            # whole: the description ends on a whole word of the option's help, not on a cut-off prefix
            if opt.flags[0] == "--help":
                continue
            last = re.findall(r"[A-Za-z0-9]+", opt.help)[-1]
            full = helps[cmd.name, opt.flags[0]]
            assert re.search(rf"(?<![A-Za-z0-9]){last}(?![A-Za-z0-9])", full), (cmd.name, opt.flags, opt.help)
            assert opt.help.count("(") == opt.help.count(")"), (cmd.name, opt.flags, opt.help)
    assert seen == fixed


def _readme_zsh_recipe() -> list[str]:
    readme = (FOLDER.parent / "README.md").read_text()
    blocks = re.findall(r"```zsh\n(.+?)\n```", readme, re.S)
    assert len(blocks) == 1, "README.md should hold one ```zsh block: the completion recipe"
    return blocks[0].splitlines()


def test_readme_zsh_recipe_completes_presets_in_a_real_zsh(tmp_path):
    """Follow the README in a fresh HOME, start an interactive zsh on a pseudo-terminal, type
    `cfgdiff train --preset <TAB>` and read the listing zsh prints."""
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh is not installed")
    import os
    import pty
    import select
    import time

    env = {"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "dumb"}
    for line in _readme_zsh_recipe():
        r = subprocess.run([zsh, "-f", "-c", line], cwd=FOLDER.parent, env=env, capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, (line, r.stderr)
    pid, fd = pty.fork()
    if pid == 0:  # the child: an interactive zsh that reads the ~/.zshrc the recipe wrote
        os.chdir(tmp_path)
        os.execve(zsh, [zsh, "-i"], env)

    def read(until: str, seconds: float = 20.0) -> str:
        out, end = "", time.time() + seconds
        while time.time() < end and until not in out:
            if select.select([fd], [], [], 0.2)[0]:
                try:
                    out += os.read(fd, 65536).decode(errors="replace")
                except OSError:
                    break
        return out

    try:
        os.write(fd, b"echo READY\n")
        assert "READY" in read("READY\r\n")
        os.write(fd, b"cfgdiff train --preset \t")
        listing = read("tiny")
        assert re.search(r"adm64\s+cifar32\s+tiny", listing), listing
    finally:
        os.write(fd, b"\x03exit\n")
        os.close(fd)
        os.waitpid(pid, 0)
