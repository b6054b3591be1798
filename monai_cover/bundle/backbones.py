# SPDX-License-Identifier: Apache-2.0
"""The backbones the pretraining bundle can train, and the override file each needs beside ``train.json``."""

from __future__ import annotations

import os
from collections.abc import Sequence

from monai_cover.networks import BACKBONES

from .overrides import OverrideError, command_line_config_files

__all__ = ["BACKBONE_OVERRIDES", "check_backbone"]

#: backbone name -> the config file (in the bundle's ``configs/``) that must be merged over ``train.json`` for it:
#: none for the stock MONAI networks of :py:data:`monai_cover.networks.BACKBONES`
BACKBONE_OVERRIDES: dict[str, str | None] = {**{name: None for name in BACKBONES}, "nnunet": "nnunet.json"}


def check_backbone(backbone: str, config_files: Sequence[str] | None = None) -> str:
    """Check that the bundle's config files fit ``backbone`` (``--backbone NAME``): a backbone with its own override
    file needs that file among the ``--config_file`` list, or the run would silently train the default network.

    Args:
        backbone: the config's ``backbone``.
        config_files: the config files of the run (default: those of this process's ``monai.bundle run`` command
            line; no check outside one).

    Returns:
        ``backbone``.

    Raises:
        OverrideError: an unknown backbone, or a missing override file (the message gives the ``--config_file``
            that works).
    """
    if backbone not in BACKBONE_OVERRIDES:
        raise OverrideError(f"--backbone: {backbone!r} is not one of {sorted(BACKBONE_OVERRIDES)}.")
    needed = BACKBONE_OVERRIDES[backbone]
    files = list(command_line_config_files() if config_files is None else config_files)
    if needed is None or not files or any(os.path.basename(str(f)) == needed for f in files):
        return backbone
    train = str(files[0])
    extra = os.path.join(os.path.dirname(train), needed)
    raise OverrideError(
        f"--backbone {backbone} needs the override file {extra} merged over {train}: pass "
        f"--config_file \"['{train}','{extra}']\"."
    )
