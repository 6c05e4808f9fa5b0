"""`cfgdiff demo`: the whole pipeline on the built-in data set, on CPU, in minutes."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cfgdiff.cli import options as o

def demo(
    out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Folder for everything the demo writes.")] = (
        "demo"
    ),
    kimg: Annotated[float, typer.Option("--kimg", min=0.001, metavar="KIMG", help="Training budget.")] = 60.0,
    n: Annotated[int, typer.Option("--n", min=10, metavar="IMAGES", help="Samples per w.")] = 200,
    steps: Annotated[int, typer.Option("--steps", "-T", min=2, help="T: sampling steps.")] = 32,
    grid: o.Grid = "0,1,2,4",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """prepare builtin:shapes -> train tiny -> sweep w -> score -> report.md; rerunning resumes.

    Example:  cfgdiff demo --out demo
    """
    from cfgdiff.config import DemoConfig

    cfg = DemoConfig(out=out, kimg=kimg, n=n, steps=steps, grid=grid)
    from cfgdiff import dist
    from cfgdiff.demo import run_demo

    result = run_demo(cfg)
    if not dist.is_main():  # under torchrun, rank 0 alone reports
        return
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo(f"report: {result['report']}")
