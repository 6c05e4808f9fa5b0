"""`python -m cfgdiff` runs the CLI."""

from cfgdiff.cli.app import run

run()
