# SPDX-License-Identifier: Apache-2.0
"""Device-sized defaults of the pretraining bundle: crop, batch and data-loader workers for the machine it runs on.

On a CPU the bundle keeps its demo settings (32^3 crops, batch 1, no workers). On CUDA it becomes a real pretraining
setup: 96^3 crops, bfloat16 autocast, as many pairs per step as fit a share of the GPU's memory, and workers from
the CPU cores each process gets. Every value is a default: ``--patch_size``, ``--batch_size`` and ``--num_workers``
on the command line still win.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
from collections.abc import Sequence

import torch

__all__ = ["CPU_PATCH_SIZE", "GPU_PATCH_SIZE", "batch_size_for_device", "estimate_pair_bytes",
           "keep_freed_memory", "num_workers_for_device", "patch_size_for_device"]

CPU_PATCH_SIZE = (32, 32, 32)
GPU_PATCH_SIZE = (96, 96, 96)

# Peak memory of one COVER step (two views, CoverNet over BasicUNet(32, 32, 64, 128, 256, 32), CoverLoss, backward),
# float32, measured by ``benchmarks/bench_memory.py`` on CPU: 0.79 GB at 48^3 and 1.40 GB at 64^3 per pair, i.e.
# about 4.1 kB per voxel of the crop plus ~0.34 GB. The activations scale with the finest width (features[0]).
_BYTES_PER_VOXEL_FP32 = 4.1e3
_FIXED_BYTES = 0.34e9
_REFERENCE_WIDTH = 32
_AMP_FACTOR = 0.6  # bfloat16 autocast keeps convolution activations in 2 bytes, normalisation statistics in 4


def _is_cuda(device: torch.device | str) -> bool:
    return torch.device(device).type == "cuda"


def patch_size_for_device(device: torch.device | str, spatial_dims: int = 3) -> list[int]:
    """The pretraining crop: :data:`GPU_PATCH_SIZE` on CUDA, :data:`CPU_PATCH_SIZE` (the demo's) elsewhere
    (``spatial_dims`` entries)."""
    size = GPU_PATCH_SIZE if _is_cuda(device) else CPU_PATCH_SIZE
    return [int(size[0])] * int(spatial_dims)


def estimate_pair_bytes(patch_size: Sequence[int], features: Sequence[int] = (32, 32, 64, 128, 256, 32),
                        amp: bool = False) -> int:
    """Estimated peak memory, in bytes, of one pair (both views) in a COVER training step on crops of
    ``patch_size`` with a ``BasicUNet`` of ``features``: linear in the crop's voxels and the finest width, calibrated
    on CPU in float32 (see the module's constants); ``amp`` (bfloat16 autocast) scales it by 0.6. An estimate for
    choosing a batch size, not a guarantee: ``benchmarks/gpu_check.py`` measures the real peak on a GPU."""
    voxels = math.prod(int(s) for s in patch_size)
    width = float(features[0]) / _REFERENCE_WIDTH
    per_pair = voxels * _BYTES_PER_VOXEL_FP32 * width * (_AMP_FACTOR if amp else 1.0)
    return int(per_pair + _FIXED_BYTES * (_AMP_FACTOR if amp else 1.0))


def batch_size_for_device(device: torch.device | str, patch_size: Sequence[int],
                          features: Sequence[int] = (32, 32, 64, 128, 256, 32), amp: bool = False,
                          num_samples: int = 1, memory_fraction: float = 0.5, max_batch: int = 8) -> int:
    """Volumes per step (the data loader's ``batch_size``; each gives ``num_samples`` pairs): 1 on a CPU (the demo);
    on CUDA, as many volumes as their pairs' :func:`estimate_pair_bytes` fit in ``memory_fraction`` of the
    device's total memory (the rest: weights, optimiser state, the allocator's slack and the data), between 1 and
    ``max_batch``.

    Raises:
        ValueError: ``memory_fraction`` is not in (0, 1], ``num_samples`` or ``max_batch`` < 1.
    """
    if not 0.0 < float(memory_fraction) <= 1.0:
        raise ValueError(f"batch_size_for_device: memory_fraction must be in (0, 1], got {memory_fraction}.")
    if int(max_batch) < 1 or int(num_samples) < 1:
        raise ValueError(f"batch_size_for_device: max_batch and num_samples must be >= 1, got {max_batch} and "
                         f"{num_samples}.")
    if not _is_cuda(device):
        return 1
    total = torch.cuda.get_device_properties(torch.device(device)).total_memory
    fits = int(total * float(memory_fraction) // (estimate_pair_bytes(patch_size, features, amp) * int(num_samples)))
    return max(1, min(int(max_batch), fits))


def num_workers_for_device(device: torch.device | str, max_workers: int = 8) -> int:
    """Data-loader workers: 0 on a CPU (the cores train); on CUDA, the CPU cores this process may use divided among
    the processes of this machine (``LOCAL_WORLD_SIZE`` under torchrun), one left for the training loop, at most
    ``max_workers``."""
    if not _is_cuda(device):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_process = cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    return max(0, min(int(max_workers), per_process - 1))


# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_KEEP_BELOW = 2**30  # blocks up to 1 GiB come from the heap and stay there when freed
_TRIM_ABOVE = 2**31 - 1  # mallopt takes an int


def keep_freed_memory(device: torch.device | str = "cpu", enabled: bool = True) -> bool:
    """Training on a CPU: keep freed memory in the process for the next step instead of handing it back to the OS.

    glibc's malloc serves large blocks (above a threshold that grows to at most 32 MiB) with fresh ``mmap`` pages and
    unmaps them when freed, so every step of a 3D network faults its activations back in page by page. This sets the
    threshold to 1 GiB and stops trimming the heap (``mallopt``), for the whole process. Measured on the 64^3
    pretraining step (two views, bf16, 2 threads): 3.0 -> 2.2 s per step, peak resident memory 1.93 -> 2.29 GiB
    (the freed blocks stay resident). Nothing is done on CUDA devices, off Linux, or where the C library has no
    ``mallopt`` (e.g. musl).

    Returns:
        whether the setting was applied.
    """
    if not enabled or torch.device(device).type != "cpu" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BELOW)) and bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_ABOVE))
