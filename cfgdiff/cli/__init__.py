"""The command line: `app.py` builds the Typer app from the `cfgdiff.commands` entry points.

Command modules must stay light to import (typer and the standard library only): they import the
library, and with it torch, inside the command function, so `cfgdiff --help` stays fast.
"""
