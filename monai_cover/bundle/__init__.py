# SPDX-License-Identifier: Apache-2.0
"""Helpers the bundles' configs call: strict command-line overrides, the output folder's lock, where the bundles
are, exporting a run as a bundle, rank-0 writes, loading pretrained backbone weights with a report. The top layer of
the package."""

from __future__ import annotations

from .backbones import BACKBONE_OVERRIDES, check_backbone
from .checks import check_model_file, check_run
from .device import (
    batch_size_for_device,
    estimate_pair_bytes,
    keep_freed_memory,
    num_workers_for_device,
    patch_size_for_device,
)
from .distributed import is_rank_zero
from .export import export_bundle
from .lock import LOCK_NAME, OutputDirLock, OutputDirLockedError, lock_output_dir
from .overrides import (
    COMMON_OVERRIDE_CHECKS,
    MONAI_RUN_ARGS,
    OverrideError,
    as_bool,
    bundle_command_line,
    check_overrides,
    command_line_config_files,
    install_error_hook,
)
from .paths import BUNDLE_NAMES, bundle_path, bundles_dir, installed_bundles_dir
from .resources import available_memory_bytes, check_resources, step_memory_bytes
from .run_record import RUN_RECORD, check_run_settings, read_run_record, run_setting, write_run_record
from .weights import IncompleteWeightsError, load_backbone_weights

__all__ = [
    "BACKBONE_OVERRIDES",
    "BUNDLE_NAMES",
    "COMMON_OVERRIDE_CHECKS",
    "IncompleteWeightsError",
    "LOCK_NAME",
    "MONAI_RUN_ARGS",
    "OutputDirLock",
    "OutputDirLockedError",
    "OverrideError",
    "RUN_RECORD",
    "as_bool",
    "available_memory_bytes",
    "batch_size_for_device",
    "bundle_command_line",
    "bundle_path",
    "bundles_dir",
    "check_backbone",
    "check_model_file",
    "check_overrides",
    "check_resources",
    "check_run",
    "check_run_settings",
    "estimate_pair_bytes",
    "command_line_config_files",
    "export_bundle",
    "install_error_hook",
    "installed_bundles_dir",
    "is_rank_zero",
    "keep_freed_memory",
    "load_backbone_weights",
    "lock_output_dir",
    "num_workers_for_device",
    "patch_size_for_device",
    "read_run_record",
    "run_setting",
    "step_memory_bytes",
    "write_run_record",
]
