# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from .prepare_batch import CoverPrepareBatch, KeysPrepareBatch

__all__ = ["CoverPrepareBatch", "KeysPrepareBatch"]
