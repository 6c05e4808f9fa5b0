"""Distribution in one place: rank, world size, device, barrier, all-reduce, print on rank 0.

Under `torchrun` (WORLD_SIZE > 1) `init()` starts one process group: NCCL when CUDA is available,
gloo otherwise. With one process no group is created and every function is a cheap no-op.
"""

from __future__ import annotations

import os
from datetime import timedelta

import torch
import torch.distributed as td

from cfgdiff.launch import launched_rank, launched_world_size, print0  # noqa: F401  (print0: dist.print0 as before)


def world_size() -> int:
    return td.get_world_size() if td.is_initialized() else launched_world_size()


def rank() -> int:
    return td.get_rank() if td.is_initialized() else launched_rank()


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def cuda_index(local: int, visible: int) -> int:
    """The CUDA device of local rank `local` among the `visible` ones: one each under torchrun, and
    device 0 when the launcher shows each process only its own GPU (SLURM's --gpus-per-task=1)."""
    return local % visible


def init() -> None:
    """Join the process group if launched by torchrun; set this rank's CUDA device."""
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(device())
    if launched_world_size() > 1 and not td.is_initialized():
        # With device_id, NCCL binds this rank's GPU now (barriers then need no guess of it).
        td.init_process_group(backend="nccl" if cuda else "gloo", timeout=timedelta(minutes=30),
                              device_id=device() if cuda else None)


def device() -> torch.device:
    """This rank's device: its CUDA device when available, else the CPU."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", cuda_index(local_rank(), torch.cuda.device_count()))


def describe_device(device: torch.device) -> str:
    """The hardware a wall time was measured on, in words: "4× NVIDIA H100 80GB HBM3", or the CPU's
    model name with torch's thread count ("AMD EPYC 9R14, 2 threads"), times the processes."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        threads = torch.get_num_threads()
        name = _cpu_model() + f", {threads} thread{'s' if threads != 1 else ''}"
    return f"{world_size()}× {name}" if world_size() > 1 else name


def _cpu_model() -> str:
    """/proc/cpuinfo's model name (Linux), else platform.processor(), else "cpu"."""
    import platform

    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def native_bf16(device: torch.device) -> bool:
    """Whether `device` computes bf16 natively: a CUDA device of compute capability 8.0 or later
    (Ampere on; a T4 or V100 only emulates bf16, slower than float32), or a CPU with AVX512-BF16 (or AMX)."""
    if device.type == "cuda":
        return bool(torch.version.hip) or torch.cuda.get_device_capability(device) >= (8, 0)
    probe = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(probe and probe())


def barrier() -> None:
    if td.is_initialized():
        td.barrier()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum `t` over ranks in place (returns it); a no-op on one process."""
    if td.is_initialized():
        td.all_reduce(t, op=td.ReduceOp.SUM)
    return t


def all_gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's `t` (rows may differ in number) along dim 0, in rank order.

    Ranks pad to the longest shard so `all_gather` sees equal shapes, then the padding is dropped.
    With one process this returns `t` itself.
    """
    if not td.is_initialized():
        return t
    n = torch.tensor([t.shape[0]], device=t.device)
    counts = [torch.zeros_like(n) for _ in range(td.get_world_size())]
    td.all_gather(counts, n)
    longest = int(max(c.item() for c in counts))
    padded = torch.zeros((longest, *t.shape[1:]), dtype=t.dtype, device=t.device)
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in counts]
    td.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts)])


def broadcast_object(obj: object) -> object:
    """Rank 0's `obj` on every rank."""
    if not td.is_initialized():
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def shutdown() -> None:
    if td.is_initialized():
        td.destroy_process_group()
