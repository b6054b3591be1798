# SPDX-License-Identifier: Apache-2.0
"""Resource guard made in ``initialize``: the memory one training step needs for the asked crops, against the memory
this machine (or GPU) has, before the lock is taken or any data is read. A ``--patch_size [1000,1000,1000]`` used to
pass the data check, write 13 GB of cache and be killed for memory after 80 s; it is refused at once, with the
numbers and a patch size that fits."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from monai_cover.data import physical_memory_bytes

from .device import estimate_pair_bytes
from .overrides import OverrideError, as_bool

__all__ = ["available_memory_bytes", "check_resources", "step_memory_bytes"]

#: the share of the available memory a step may plan to take (the rest: the data, the cache, the allocator's slack)
MEMORY_SHARE = 0.8


def available_memory_bytes(device: Any = "cpu") -> tuple[int | None, str]:
    """Memory a run on ``device`` can use, and where the figure comes from: a CUDA device's total memory, or the
    machine's available memory (``MemAvailable`` of ``/proc/meminfo``, else the physical memory)."""
    dev = torch.device(str(device))
    if dev.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(dev)
        return int(props.total_memory), f"{props.name}'s memory"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "the available memory (MemAvailable)"
    except OSError:
        pass
    physical = physical_memory_bytes()
    return (physical, "the physical memory") if physical else (None, "unknown")


def step_memory_bytes(patch_size: Sequence[int], features: Sequence[int], items: int, views: int = 2,
                      amp: bool = False, in_channels: int = 1,
                      crop_size: Sequence[int] | None = None) -> int:  # fmt: skip
    """Estimated peak memory of one training step: ``items`` crops (batch size x samples per volume), each of
    ``views`` views of ``patch_size`` through the network and back (:func:`~monai_cover.bundle.device.
    estimate_pair_bytes` per two views), plus the loaded crops of ``crop_size`` (float32, ``in_channels``; the pair
    transform holds the input, two views and the displacement field)."""
    network = estimate_pair_bytes(patch_size, features, amp) * max(1, int(views)) / 2
    crop = math.prod(int(s) for s in (crop_size or patch_size))
    data = crop * 4 * int(in_channels) * (2 + len(patch_size))
    return int(int(items) * (network + data))


def check_resources(patch_size: Sequence[int], features: Sequence[int], batch_size: Any, num_samples: Any,
                    device: Any = "cpu", amp: Any = False, views: int = 2, in_channels: int = 1,
                    crop_size: Sequence[int] | None = None, available: int | None = None) -> None:  # fmt: skip
    """Refuse a run whose training step cannot fit in memory, before anything is read or written.

    Args:
        patch_size: the network's crop (voxels per axis).
        features: the backbone widths (the activations scale with ``features[0]``).
        batch_size, num_samples: volumes per step and crops per volume.
        device: where the step runs (a GPU's memory, else the machine's available memory).
        amp: mixed precision (read with :py:func:`as_bool`).
        views: 2 for pretraining pairs, 1 for fine-tuning.
        in_channels, crop_size: the loaded crop (``crop_size``: before the pair transform cuts ``patch_size``).
        available: the memory to plan with, in bytes (default :func:`available_memory_bytes`).

    Raises:
        OverrideError: the estimate exceeds :data:`MEMORY_SHARE` of the memory: the message gives both in GB and
            the largest cubic (square) ``--patch_size`` that would fit with this batch.
    """
    amp = as_bool(amp, "amp")
    items = max(1, int(batch_size)) * max(1, int(num_samples))
    where = "the memory"
    if available is None:
        available, where = available_memory_bytes(device)
    if not available:
        return
    need = step_memory_bytes(patch_size, features, items, views, amp, in_channels, crop_size)
    budget = MEMORY_SHARE * available
    if need <= budget:
        return
    ratio = [int(c) / int(p) for c, p in zip(crop_size or patch_size, patch_size)]
    fits = None
    for side in range(16 * (max(int(s) for s in patch_size) // 16), 15, -16):
        size = [side] * len(patch_size)
        crop = [int(math.ceil(side * r)) for r in ratio]
        if step_memory_bytes(size, features, items, views, amp, in_channels, crop) <= budget:
            fits = size
            break
    hint = (f"--patch_size {str(fits).replace(' ', '')} fits" if fits else
            "even 16-voxel crops do not fit: lower --batch_size/--num_samples or --features")
    gb = 1024**3
    raise OverrideError(
        f"--patch_size {str(list(map(int, patch_size))).replace(' ', '')}: one training step needs about "
        f"{need / gb:.1f} GB ({items} crop(s) of {'x'.join(map(str, map(int, patch_size)))} voxels, "
        f"features {list(map(int, features))}, {views} view(s) each), more than {MEMORY_SHARE:.0%} of "
        f"{where}, {available / gb:.1f} GB. {hint} (or lower --batch_size/--num_samples)."
    )
