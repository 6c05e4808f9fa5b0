"""The plugin mechanism: commands come from the `cfgdiff.commands` entry-point group.

A small third-party plugin package is written into a temporary folder (module + dist-info with an
entry_points.txt) and put on PYTHONPATH, exactly as pip would install it.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CFGDIFF = [sys.executable, "-m", "cfgdiff"]

PLUGIN = '''
from typing import Annotated
import typer

def hello(name: Annotated[str, typer.Option(help="Who to greet.")] = "world") -> None:
    """Say hello (a third-party command)."""
    typer.echo(f"hello {name}")

def fail(kind: str = "data") -> None:
    """Raise a library error."""
    from cfgdiff.errors import ConfigError, DataError
    raise (ConfigError if kind == "config" else DataError)(f"bad {kind} input")
'''


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("plugin")
    (root / "myplug.py").write_text(textwrap.dedent(PLUGIN))
    info = root / "myplug-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: myplug\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        "[cfgdiff.commands]\nhello = myplug:hello\nfail = myplug:fail\nbroken = myplug_missing:command\n"
    )
    return root


def run(args, plugin_path=None, **env):
    e = dict(os.environ, **env)
    if plugin_path is not None:
        e["PYTHONPATH"] = str(plugin_path) + os.pathsep + e.get("PYTHONPATH", "")
    return subprocess.run(CFGDIFF + args, capture_output=True, text=True, env=e, timeout=120)


def test_help_and_version_without_plugins():
    r = run(["--version"])
    assert r.returncode == 0 and r.stdout.strip().startswith("cfgdiff ")
    r = run(["--help"])
    assert r.returncode == 0 and "plugins" in r.stdout


def test_third_party_plugin_is_registered_and_runs(plugin_path):
    r = run(["--help"], plugin_path)
    assert r.returncode == 0
    assert "hello" in r.stdout and "fail" in r.stdout
    # the broken plugin is reported in exactly one line and breaks nothing else
    lines = [line for line in r.stderr.splitlines() if "broken" in line]
    assert len(lines) == 1 and "failed to load" in lines[0] and "ModuleNotFoundError" in lines[0]
    r = run(["hello", "--name", "cfg"], plugin_path)
    assert r.returncode == 0 and r.stdout.strip() == "hello cfg"


def test_plugins_command_lists_packages(plugin_path):
    r = run(["plugins", "--json"], plugin_path)
    assert r.returncode == 0
    records = {rec["name"]: rec for rec in json.loads(r.stdout)["results"]}
    assert records["hello"]["package"] == "myplug 0.3" and records["hello"]["error"] is None
    assert records["broken"]["error"].startswith("ModuleNotFoundError")
    assert records["plugins"]["package"].startswith("cfgdiff ")


def test_library_errors_become_one_line_and_exit_codes(plugin_path):
    r = run(["fail"], plugin_path)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == "cfgdiff: error: bad data input"
    assert "Traceback" not in r.stderr
    r = run(["fail", "--kind", "config"], plugin_path)
    assert r.returncode == 2
    r = run(["fail"], plugin_path, CFGDIFF_DEBUG="1")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = run(["no-such-command"])
    assert r.returncode == 2


def test_building_the_app_does_not_import_torch():
    code = "import sys; from cfgdiff.cli.app import build_app; build_app(); print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_a_process_that_is_exiting_ignores_late_signals(capsys):
    """After the work, `run()` ignores SIGINT/SIGTERM so a late Ctrl-C cannot turn exit 0 into -2."""
    import signal

    from cfgdiff.cli.app import main

    before = signal.getsignal(signal.SIGINT)
    try:
        assert main(["--version"]) == 0
        assert signal.getsignal(signal.SIGINT) is before  # in-process callers get their handler back
        assert main(["--version"], exiting=True) == 0
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


# ---- the plugin rule, generated over what a module can do at import -----------------------------------------------
BEHAVIOURS = {  # entry-point name -> the module's top-level code
    "raises": "raise ValueError('broken at import')",
    "exits0": "import sys; sys.exit(0)",
    "exits3": "import sys; sys.exit(3)",
    "interrupts": "raise KeyboardInterrupt",
    "generator": "raise GeneratorExit",
    "baseexc": "raise BaseException('odd')",
    "prints": "print('hello from import'); import sys; print('to stderr', file=sys.stderr)\n"
              "def prints() -> None:\n    '''A command that printed at import.'''\n",
    "sample": "def sample() -> None:\n    '''A plugin that wants to replace the built-in sample.'''\n",
}


@pytest.fixture(scope="module")
def hostile_plugins(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    lines = []
    for name, code in BEHAVIOURS.items():
        (root / f"hostile_{name}.py").write_text(code + "\n")
        lines.append(f"{name} = hostile_{name}:{name}")
    info = root / "hostile-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: hostile\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[cfgdiff.commands]\n" + "\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("args", [["--version"], ["plugins", "--json"], ["sample", "--help"], ["prints"]])
def test_no_plugin_can_take_the_cli_down(hostile_plugins, args):
    r = run(args, hostile_plugins)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "hello from import" not in r.stdout
    for name in BEHAVIOURS:  # one line each, naming the package
        lines = [ln for ln in r.stderr.splitlines() if f"plugin '{name}'" in ln]
        assert len(lines) == 1 and "from hostile 1.0" in lines[0], (name, r.stderr)
    refused = next(ln for ln in r.stderr.splitlines() if "plugin 'sample'" in ln)
    assert "refused" in refused and "built-in" in refused
    if args == ["sample", "--help"]:
        assert "Draw guided samples" in r.stdout or "--steps" in r.stdout  # the built-in's help
    if args[0] == "plugins":
        records = {rec["name"]: rec for rec in json.loads(r.stdout)["results"]}
        assert records["sample"]["package"].startswith("cfgdiff ") and records["sample"]["error"] is None
        assert records["exits0"]["error"].startswith("SystemExit") and records["prints"]["error"] is None


def test_a_failure_with_json_prints_one_envelope(tmp_path):
    r = run(["sample", str(tmp_path / "nowhere.pt"), "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 1 and doc["ok"] is False and doc["command"] == "sample"
    assert doc["results"] == {"error": "CheckpointError", "message": f"{tmp_path / 'nowhere.pt'}: no such checkpoint file",
                              "exit_code": 1}
    r = run(["sample", "--steps", "1", "--json"])
    doc = json.loads(r.stdout)
    assert r.returncode == 2 and doc["results"]["error"] == "UsageError" and doc["results"]["exit_code"] == 2


def test_error_lines_escape_control_characters_and_undecodable_names(tmp_path):
    from cfgdiff.cli.app import one_line

    assert one_line("a\nb\tc") == "a\\nb\\tc"
    assert one_line("x\udcffy") == "x\\udcffy"
    name = os.fsencode(tmp_path) + b"/bad\xff\nname.pt"
    r = subprocess.run([*CFGDIFF, "sample", name], capture_output=True, timeout=120)
    err = r.stderr.decode("utf-8")  # printable: no raw bytes, one line
    assert r.returncode == 1 and len(err.strip().splitlines()) == 1 and "\\n" in err and "\\udcff" in err


def test_the_top_level_help_shows_each_commands_first_sentence_whole():
    from cfgdiff.cli.app import build_app, short_help

    r = run(["--help"])
    listing = r.stdout.split("Commands:")[1]
    assert "..." not in listing
    app, records = build_app()
    import typer

    for name, command in typer.main.get_command(app).commands.items():
        words = short_help(command.callback.__doc__).split()
        assert " ".join(listing.split()).count(" ".join(words)) == 1, name  # whole, however the terminal wraps


@pytest.mark.parametrize("command", ["prepare", "train", "sample", "sweep", "score", "demo", "export", "plugins"])
def test_help_fits_80_columns_and_options_name_their_values(command):
    r = subprocess.run([*CFGDIFF, command, "--help"], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, COLUMNS="80"))
    assert r.returncode == 0
    wide = [line for line in r.stdout.splitlines() if len(line) > 80]
    assert not wide, wide
    options = [line for line in r.stdout.splitlines() if line.lstrip().startswith("-")]
    assert not [line for line in options if "<" in line.split("  ")[0]], options  # a metavar, not <float>
