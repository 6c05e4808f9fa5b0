"""`cfgdiff prepare`: a labelled image source -> an HDF5 dataset file for `cfgdiff train`."""

from __future__ import annotations

import dataclasses
import enum
import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from cfgdiff import limits

from cfgdiff.cli.options import rule
from cfgdiff.config import RESIZE_METHODS, check_size

Resize = enum.Enum("Resize", {m.replace("-", "_"): m for m in RESIZE_METHODS}, type=str)  # the choices of --resize


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
        typer.Option("--out", "-o", help="Output HDF5 file.", metavar="FILE", show_default="data/<source><size>.h5"),
    ] = None,
    size: Annotated[
        Optional[int],
        typer.Option(help="Output side in pixels (64: the paper's ImageNet 64x64).", callback=rule(check_size), metavar="PX",
                     show_default="64; builtin: 32"),
    ] = None,
    resize: Annotated[
        Optional[Resize],
        typer.Option(
            help="area: the whole image, exact area mean (the paper's \"area-downsampled\" data); "
            "center-crop-adm: ADM's crop; box: Pillow's BOX, as the Imagenet64_*.npz files.",
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
            min=limits.LIMIT[0],
            max=limits.LIMIT[1],
            metavar="IMAGES",
            show_default="all; builtin: 20000",
        ),
    ] = None,
    first_classes: Annotated[
        Optional[int],
        typer.Option("--first-classes", help="Only the first K classes in label order (a count; sample's --classes "
                     "is a list of ids).", min=limits.CLASSES[0], max=limits.CLASSES[1], metavar="K",
                     show_default="all"),
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
        Optional[int], typer.Option(help="Random seed of builtin sources.", min=limits.SEED[0], max=limits.SEED[1],
                                    metavar="INT", show_default="0")
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
        typer.Option(help="Decoding processes; 0: one per core (the fastest), 1: decode in the main process.",
                     min=limits.WORKERS[0], max=limits.WORKERS[1], metavar="COUNT"),
    ] = 0,
    force: Annotated[bool, typer.Option("--force", help="Replace an existing output file.")] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the source and print the plan (config, image count) on stdout; "
                                      "write nothing.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document (docs/json.md) on stdout.")] = False,
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
    from cfgdiff.config import override, prepare_preset

    cfg = override(  # the options checked together, before torch is imported
        prepare_preset(preset, source),
        size=size,
        resize=resize.value if resize else None,
        split=split,
        limit=limit,
        classes=first_classes,
        draft=draft,
        class_map=str(class_map) if class_map else None,
        seed=seed,
    )
    from cfgdiff.data.prepare import prepare as run_prepare
    from cfgdiff.launch import launched_rank, launched_world_size

    # torch is never imported: decoding needs none, and its import is seconds of a short prepare's wall time
    if launched_world_size() > 1:  # under torchrun N copies would write the same files: rank 0 alone works
        if launched_rank() != 0:
            return
        typer.echo(f"prepare: {launched_world_size()} processes launched; rank 0 alone prepares (decoding in "
                   "--workers processes), the others exit", err=True)
    result = run_prepare(cfg, out, force=force, workers=workers, dry_run=dry_run)
    if as_json:
        from cfgdiff.cli import envelope

        summary = dataclasses.asdict(result)
        envelope.emit(
            "prepare",
            inputs={"source": source, "class_map": cfg.class_map},
            outputs={"dataset": result.output, "skipped_list": result.report},
            settings=result.config,
            results={k: (v if v != "" else None) for k, v in summary.items()  # no split: null, not ""
                     if k not in ("output", "report", "config")},
            provenance={"source_kind": result.kind},
        )
    elif dry_run:  # the plan is the command's output: stdout, as every --dry-run
        typer.echo(json.dumps(result.config, indent=2))
        split = f", split {result.split}" if result.split else ""
        typer.echo(f"would write {result.output}: {result.count} images of {result.size}x{result.size} px, "
                   f"{result.num_classes} classes ({result.kind}{split})")
