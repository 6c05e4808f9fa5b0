"""`cfgdiff demo`: the whole pipeline on the built-in data set, on CPU, in minutes."""

from __future__ import annotations

from typing import Annotated

import typer

from cfgdiff import limits

from cfgdiff.cli import options as o


def demo(
    out_dir: Annotated[str, typer.Option("--out-dir", "-o", metavar="DIR",
                                         help="Folder for everything the demo writes.")] = "demo",
    kimg: Annotated[float, typer.Option("--kimg", min=limits.KIMG[0], max=limits.KIMG[1], metavar="KIMG", help="Training budget.")] = 60.0,
    n: Annotated[int, typer.Option("--n", min=limits.DEMO_N[0], max=limits.DEMO_N[1], metavar="IMAGES", help="Samples per w.")] = 200,
    sampler: Annotated[str, typer.Option("--sampler", metavar="NAME",
                                         help="Sampler (ancestral, ddim, dpmpp-2m, heun, dpmpp-2m-sde); the "
                                              "documented results use ancestral.")] = "ancestral",
    steps: Annotated[int, typer.Option("--steps", "-T", min=limits.STEPS[0], max=limits.STEPS[1], metavar="T",
                                       help="Sampling steps T (NFE per sample = T, 2T where guided).")] = 32,
    grid: Annotated[str, typer.Option("--grid", metavar="NAME", help="λ grid: paper, linear or edm.")] = "paper",
    w: o.Grid = "0,1,2,4",
    as_json: o.Json = False,
) -> None:
    """prepare builtin:shapes -> train tiny -> sweep w -> score -> report.md; rerunning resumes.

    Example:  cfgdiff demo --out-dir demo
    """
    from cfgdiff.config import DemoConfig

    cfg = DemoConfig(out_dir=out_dir, kimg=kimg, n=n, steps=steps, w=w, sampler=sampler, grid=grid)
    from cfgdiff import dist
    from cfgdiff.demo import run_demo

    result = run_demo(cfg)
    if not dist.is_main():  # under torchrun, rank 0 alone reports
        return
    if as_json:
        import dataclasses

        from cfgdiff.cli import envelope

        meta = result["meta"]
        envelope.emit("demo", inputs={}, outputs={"out_dir": out_dir, "report": result["report"], **result["sweep"]},
                      settings=dataclasses.asdict(cfg), results={"rows": result["rows"], "checks": result["checks"]},
                      provenance={k: meta.get(k) for k in ("checkpoint", "reference", "inception")})
    else:
        typer.echo(f"report: {result['report']}")
