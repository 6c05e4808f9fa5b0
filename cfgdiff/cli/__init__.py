"""The command line: `app.py` builds the Typer app from the `cfgdiff.commands` entry points.

Command modules must stay light to import (typer and the standard library only): they import the
library, and with it torch, inside the command function, so `cfgdiff --help` stays fast.

Run as the `cfgdiff` program, this package first puts `cfgdiff.stops.early_exit` on the stop signals,
before typer or a plugin is imported: a Ctrl-C while the CLI starts exits 130 with one line.
"""

import os as _os
import sys as _sys

if _sys.argv and (_os.path.basename(_sys.argv[0]) == "cfgdiff"
                  or _sys.argv[0].endswith(_os.path.join("cfgdiff", "__main__.py"))):
    from cfgdiff.stops import install_early as _install_early

    _install_early()
