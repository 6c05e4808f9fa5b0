"""The README's two commands are the contract; `.ci/run` must run the test command verbatim."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (REPO / "README.md").read_text())


def test_readme_starts_with_exactly_two_commands_and_ci_runs_the_second():
    commands = readme_commands()
    assert len(commands) >= 2
    main, tests = commands[0], commands[1]
    assert "pip install" in main and "pytest" in tests
    assert tests in (REPO / ".ci" / "run").read_text()
    assert "torch==2.13.0" in main and "torch==2.13.0" in tests
