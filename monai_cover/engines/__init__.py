# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .autocast import AutocastInferer, autocast_inferer
from .prepare_batch import CoverPrepareBatch, KeysPrepareBatch

__all__ = ["AutocastInferer", "CoverPrepareBatch", "KeysPrepareBatch", "autocast_inferer"]
