# SPDX-License-Identifier: Apache-2.0
"""monai_cover: COVER vector contrastive pretraining for MONAI.

The displacement-field convention shared by every module is documented in :py:mod:`monai_cover.ddf`.
"""

from __future__ import annotations

import sys

__version__ = "0.1.0"

from .weights import LoadReport, load_pretrained

__all__ = ["__version__", "print_config", "load_pretrained", "LoadReport"]


def print_config(file=sys.stdout) -> None:
    """Print MONAI's configuration (versions of MONAI, PyTorch, NumPy and optional packages),
    followed by the monai_cover version, as bug reports should include."""
    from monai.config import print_config as monai_print_config

    monai_print_config(file=file)
    print(f"\nmonai_cover version: {__version__}", file=file, flush=True)
