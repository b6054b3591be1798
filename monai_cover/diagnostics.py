# SPDX-License-Identifier: Apache-2.0
"""Deprecated alias of :py:mod:`monai_cover.metrics.dispersion` (the over-dispersion diagnostics moved there)."""

from __future__ import annotations

import warnings

from monai_cover.metrics.dispersion import *  # noqa: F401,F403
from monai_cover.metrics.dispersion import __all__  # noqa: F401

warnings.warn(
    "monai_cover.diagnostics is deprecated: use monai_cover.metrics (feature_dispersion, effective_rank, "
    "dispersion_report, format_dispersion).",
    DeprecationWarning,
    stacklevel=2,
)
