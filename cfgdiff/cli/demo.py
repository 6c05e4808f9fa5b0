"""`cfgdiff demo`: the whole pipeline on the built-in data set, on CPU, in minutes."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def demo(
    out: Annotated[str, typer.Option("--out", "-o", metavar="DIR", help="Folder for everything the demo writes.")] = (
        "demo"
    ),
    kimg: Annotated[float, typer.Option("--kimg", min=0.001, metavar="KIMG", help="Training budget.")] = 60.0,
    n: Annotated[int, typer.Option("--n", min=10, metavar="IMAGES", help="Samples per w.")] = 200,
    steps: Annotated[int, typer.Option("--steps", "-T", min=2, help="T: sampling steps.")] = 32,
    grid: Annotated[str, typer.Option("--w", metavar="GRID", help="Guidance weights.")] = "0,1,2,4",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")] = False,
) -> None:
    """prepare builtin:shapes -> train tiny -> sweep w -> score -> report.md; rerunning resumes.

    Example:  cfgdiff demo --out demo
    """
    from cfgdiff import dist
    from cfgdiff.demo import DemoConfig, run_demo

    result = run_demo(DemoConfig(out=out, kimg=kimg, n=n, steps=steps, grid=grid))
    if not dist.is_main():  # under torchrun, rank 0 alone reports
        return
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        typer.echo(f"report: {result['report']}")
