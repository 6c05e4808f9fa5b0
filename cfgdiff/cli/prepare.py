"""`cfgdiff prepare`: a labelled image source -> an HDF5 dataset file for `cfgdiff train`."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer


class Resize(str, enum.Enum):
    area = "area"
    center_crop_adm = "center-crop-adm"
    box = "box"


def prepare(
    source: Annotated[
        str,
        typer.Argument(
            help="What to convert: an ImageNet train folder (one folder per synset); the ILSVRC2012 train "
            "tar (a tar of per-synset tars, read without extracting); any class-folder image set "
            "[<split>/]<class>/<image> as a folder, .tar, .tar.gz or .zip; downsampled-ImageNet .npz "
            "batches (a file or folder); or builtin:shapes (generated, no download).",
            metavar="SOURCE",
            show_default=False,
        ),
    ],
    out: Annotated[
        Optional[Path],
        typer.Option("--out", "-o", help="Output file.", metavar="FILE.h5", show_default="data/<source><size>.h5"),
    ] = None,
    size: Annotated[
        Optional[int],
        typer.Option(help="Output side in pixels.", min=8, max=512, metavar="PX", show_default="64; builtin: 32"),
    ] = None,
    resize: Annotated[
        Optional[Resize],
        typer.Option(
            help="area: the whole image box-filtered (the paper's data); center-crop-adm: ADM's crop.",
            show_default="area",
        ),
    ] = None,
    split: Annotated[
        Optional[str],
        typer.Option(
            help="Split folder to read, e.g. train or test.", metavar="NAME", show_default="the only one, else train"
        ),
    ] = None,
    limit: Annotated[
        Optional[int],
        typer.Option(
            help="At most this many images, spread evenly over the classes (builtin: the count).",
            min=1,
            metavar="IMAGES",
            show_default="all; builtin: 20000",
        ),
    ] = None,
    classes: Annotated[
        Optional[int],
        typer.Option(help="Only the first K classes in label order.", min=1, metavar="K", show_default="all"),
    ] = None,
    draft: Annotated[
        Optional[bool],
        typer.Option(
            "--draft/--no-draft",
            help="Decode JPEGs at a reduced DCT scale (>= 2x the size) first: faster, not bit-exact.",
            show_default="no-draft",
        ),
    ] = None,
    class_map: Annotated[
        Optional[Path],
        typer.Option(
            help="map_clsloc.txt or synset_words.txt: class names, and the label order of npz batches.",
            metavar="FILE",
            show_default="found beside SOURCE",
        ),
    ] = None,
    seed: Annotated[
        Optional[int], typer.Option(help="Random seed of builtin sources.", min=0, metavar="INT", show_default="0")
    ] = None,
    preset: Annotated[
        Optional[str],
        typer.Option(
            help="Named defaults: paper (64 px, area), adm (64 px, ADM crop), demo (builtin:shapes, 32 px).",
            metavar="NAME",
            show_default="demo for builtin:, else paper",
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(help="Decoding processes; 0: one per core, 1: decode in the main process.", min=0, metavar="N"),
    ] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the source and print the resolved config; write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document with the result on stdout.")] = False,
) -> None:
    """Convert a labelled image set into an HDF5 dataset of SIZE×SIZE RGB images for training.

    Decoding and resizing run in worker processes; the main process reads and writes.
    Damaged images are skipped, counted, and listed in <output stem>.skipped.tsv.
    An interrupted run leaves no output file; rerunning the same command resumes it.
    Labels follow the sorted class ids (n01440764 = 0 for ImageNet).

    Example:  cfgdiff prepare ~/imagenet/train --size 64

    Example:  cfgdiff prepare cifar10-jpg.tar.gz --size 32 --split test

    Example:  cfgdiff prepare builtin:shapes --limit 20000
    """
    from cfgdiff import dist
    from cfgdiff.config import override
    from cfgdiff.data.prepare import preset_config
    from cfgdiff.data.prepare import prepare as run_prepare

    if dist.world_size() > 1:  # under torchrun N copies would write the same files: rank 0 alone works
        if not dist.is_main():
            return
        dist.print0(f"prepare: {dist.world_size()} processes launched; rank 0 alone prepares (decoding in "
                    "--workers processes), the others exit")
    cfg = override(
        preset_config(preset, source),
        size=size,
        resize=resize.value if resize else None,
        split=split,
        limit=limit,
        classes=classes,
        draft=draft,
        class_map=str(class_map) if class_map else None,
        seed=seed,
    )
    result = run_prepare(cfg, out, force=force, workers=workers, dry_run=dry_run)
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(result), indent=2))
    elif dry_run:
        typer.echo(json.dumps(result.config, indent=2), err=True)
