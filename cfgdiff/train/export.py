"""A run's EMA weights as one shareable safetensors file: tensors only (no pickle, nothing that
runs on load), the config that rebuilds the network embedded in the header's metadata.

Metadata (all strings, safetensors' rule): `format` = "cfgdiff-ema-safetensors", `version` = "1",
`config` (the training config as JSON, as in config.json), `dataset_info` (JSON), `step`,
`images_seen`, `source` (the checkpoint's file name) and `source_sha256`, `cfgdiff_version`.
Tensor names are the EMA network's state_dict keys.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cfgdiff import __version__

FORMAT = "cfgdiff-ema-safetensors"


def export_safetensors(run: str | Path, out: str | Path | None = None, force: bool = False) -> dict[str, Any]:
    """Write the EMA weights of `run` (a run directory: its newest EMA file; or one checkpoint/EMA
    file) to `out`; refuses an existing `out` without `force`, and an `out` that is the source."""
    import torch
    from safetensors.torch import save_file

    from safetensors import SafetensorError

    from cfgdiff.files import Owner, atomic_path, check_outputs, job_id, run_inputs, serializer_errors, sha256_file
    from cfgdiff.runs import read_checkpoint, resolve_weights_file

    source = resolve_weights_file(Path(run))
    out = Path(out) if out is not None else source.with_suffix(".safetensors")
    owner = Owner("export", "export", job_id("export", str(source.resolve())))
    check_outputs({"--out": out}, [source, *run_inputs(run)], owners=owner, force=force)  # before any work
    state = read_checkpoint(source)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state["ema"].items()}
    metadata = {
        "format": FORMAT, "version": "1", "config": json.dumps(state["config"]),
        "dataset_info": json.dumps(state.get("dataset_info", {})), "step": str(int(state["step"])),
        "images_seen": str(int(state["images_seen"])), "source": source.name, "source_sha256": sha256_file(source),
        "cfgdiff_version": __version__,
    }
    with serializer_errors(out, SafetensorError), atomic_path(out, owner=owner) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return {"source": str(source), "source_sha256": metadata["source_sha256"], "out": str(out),
            "step": int(state["step"]),
            "kimg": int(state["images_seen"]) / 1000, "tensors": len(tensors),
            "parameters": sum(t.numel() for t in tensors.values()), "bytes": out.stat().st_size,
            "torch": torch.__version__}
