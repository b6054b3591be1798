# SPDX-License-Identifier: Apache-2.0
"""The dataset a bundle trains or validates on, by the kind the data check chose (one config component instead
of a disabled ``CacheDataset`` and a disabled ``PersistentDataset`` and an expression picking one)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from monai.data import CacheDataset, PersistentDataset

__all__ = ["make_dataset"]


def make_dataset(kind: str, data: Sequence, transform: Callable, cache_dir: str | os.PathLike,
                 cache_rate: float = 1.0, num_workers: int = 0) -> CacheDataset | PersistentDataset:  # fmt: skip
    """MONAI's ``CacheDataset`` (``kind="cache"``: preprocessed items held in memory) or ``PersistentDataset``
    (``kind="persistent"``: written once under ``<cache_dir>/persistent`` and read back each epoch).

    Args:
        kind: ``"cache"`` or ``"persistent"``, as :py:attr:`DataReport.dataset_type` decides.
        data: the datalist items.
        transform: the whole preprocessing (the cached part ends at the first random transform).
        cache_dir: the run's cache folder.
        cache_rate: the cached fraction (``CacheDataset``).
        num_workers: workers filling the cache (``CacheDataset``).

    Raises:
        ValueError: another ``kind``.
    """
    if kind == "cache":
        return CacheDataset(data=data, transform=transform, cache_rate=cache_rate, num_workers=num_workers,
                            progress=False)  # fmt: skip
    if kind == "persistent":
        return PersistentDataset(data=data, transform=transform, cache_dir=os.path.join(str(cache_dir), "persistent"))
    raise ValueError(f"dataset kind must be 'cache' or 'persistent', got {kind!r}.")
