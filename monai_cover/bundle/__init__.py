# SPDX-License-Identifier: Apache-2.0
"""Helpers the bundles' configs call: where the bundles are, exporting a run as a bundle, rank-0 writes,
loading pretrained backbone weights with a report. The top layer of the package."""

from __future__ import annotations

from .distributed import is_rank_zero
from .export import export_bundle
from .paths import bundle_path, bundles_dir
from .weights import load_backbone_weights

__all__ = ["bundles_dir", "bundle_path", "export_bundle", "is_rank_zero", "load_backbone_weights"]
