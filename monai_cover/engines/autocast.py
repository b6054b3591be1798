# SPDX-License-Identifier: Apache-2.0
"""Mixed precision on CPU for MONAI's engines.

``SupervisedTrainer``/``SupervisedEvaluator`` with ``amp=True`` autocast for CUDA only: on a CPU the setting is
dropped with a warning and the run stays in float32. :class:`AutocastInferer` runs the network's forward under
``torch.autocast`` on the CPU instead (the loss and the backward stay outside, as MONAI does on CUDA), and
:func:`autocast_inferer` picks it for a bundle's device.
"""

from __future__ import annotations

import torch
from monai.inferers import Inferer

__all__ = ["AutocastInferer", "autocast_inferer"]


class AutocastInferer(Inferer):
    """Another inferer, run under ``torch.autocast(device_type, dtype)``.

    Args:
        inferer: the inferer that calls the network (``SimpleInferer``, ``SlidingWindowInferer``...).
        device_type: ``"cpu"`` (what MONAI's engines do not autocast) or ``"cuda"``.
        dtype: the autocast dtype, ``torch.bfloat16`` by default (``torch.float16`` also works on recent CPUs).
    """

    def __init__(self, inferer: Inferer, device_type: str = "cpu", dtype: torch.dtype = torch.bfloat16) -> None:
        super().__init__()
        if not isinstance(inferer, Inferer):
            raise TypeError(f"AutocastInferer: inferer must be a monai.inferers.Inferer, got {type(inferer).__name__}.")
        self.inferer, self.device_type, self.dtype = inferer, str(device_type), dtype

    def __call__(self, inputs, network, *args, **kwargs):
        with torch.autocast(device_type=self.device_type, dtype=self.dtype):
            return self.inferer(inputs, network, *args, **kwargs)


def autocast_inferer(
    inferer: Inferer, device: torch.device | str, amp: bool, dtype: torch.dtype | str = "bfloat16"
) -> Inferer:
    """``inferer`` wrapped in an :class:`AutocastInferer` where MONAI's own ``amp`` does not reach: ``amp`` on a
    non-CUDA device. On CUDA (the engine's ``amp`` autocasts there) or with ``amp`` off, ``inferer`` itself.

    Args:
        inferer: the engine's inferer.
        device: the engine's device.
        amp: whether mixed precision was asked for.
        dtype: a ``torch.dtype`` or its name (``"bfloat16"``, ``"float16"``).
    """
    device = torch.device(device)
    if not amp or device.type == "cuda":
        return inferer
    if isinstance(dtype, str):
        if dtype not in ("bfloat16", "float16"):
            raise ValueError(f"autocast_inferer: dtype must be 'bfloat16' or 'float16', got {dtype!r}.")
        dtype = getattr(torch, dtype)
    return AutocastInferer(inferer, device.type, dtype)
