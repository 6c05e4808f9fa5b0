"""`cfgdiff export`: a run's EMA weights as safetensors, with the config that rebuilds the network."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer


def export(
    run: Annotated[Path, typer.Argument(metavar="RUN", help="Run directory (its newest EMA file) or a checkpoint file.")],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", metavar="FILE",
                     help="Output .safetensors (default: beside the EMA file, ema-<step>.safetensors)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout.")] = False,
) -> None:
    """Write the EMA weights as safetensors: tensors only, config and provenance in its metadata.

    Example:  cfgdiff export runs/imagenet64-adm64 --out adm64-cfg.safetensors
    """
    from cfgdiff.train.export import export_safetensors

    result = export_safetensors(run, out, force=force)
    if as_json:
        from cfgdiff.cli import envelope

        envelope.emit("export", inputs={"run": result["source"]}, outputs={"safetensors": result["out"]},
                      settings={"force": force},
                      results={k: result[k] for k in ("step", "kimg", "tensors", "parameters", "bytes")},
                      provenance={"torch": result["torch"], "checkpoint_sha256": result["source_sha256"]})
    else:
        typer.echo(f"wrote {result['out']}: {result['parameters'] / 1e6:.2f}M parameters, step {result['step']} "
                   f"({result['kimg']:g} kimg) of {result['source']}", err=True)
