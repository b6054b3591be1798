# SPDX-License-Identifier: Apache-2.0
"""``python -m monai_cover.bundle path cover_pretrain_3d``: print a shipped bundle's folder (``list``: all of them)."""

from __future__ import annotations

import sys

from monai_cover.bundle.paths import _main

if __name__ == "__main__":
    sys.exit(_main())
