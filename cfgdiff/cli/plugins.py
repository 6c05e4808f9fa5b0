"""`cfgdiff plugins`: list every command, the package it came from, and whether it loaded."""

from __future__ import annotations

from typing import Annotated

import typer


def plugins(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout.")] = False,
) -> None:
    """List the commands (plugins in the `cfgdiff.commands` entry-point group) and their packages.

    Example:  cfgdiff plugins --json
    """
    from cfgdiff.cli.app import GROUP, loaded_plugins

    records = loaded_plugins()
    if as_json:
        from cfgdiff import __version__
        from cfgdiff.cli import envelope

        envelope.emit("plugins", settings={"group": GROUP}, results=[r.__dict__ for r in records],
                      provenance={"cfgdiff": __version__})
        return
    width = max((len(r.name) for r in records), default=4)
    for r in records:
        status = "ok" if r.error is None else f"FAILED: {r.error}"
        typer.echo(f"{r.name:<{width}}  {r.package:<20}  {r.target}  {status}")
