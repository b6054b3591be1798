# SPDX-License-Identifier: Apache-2.0
"""Which process of a distributed run writes files."""

from __future__ import annotations

import os

import torch

__all__ = ["is_rank_zero"]


def is_rank_zero() -> bool:
    """True outside distributed runs and on global rank 0."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0
