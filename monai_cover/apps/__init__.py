# SPDX-License-Identifier: Apache-2.0
"""Command-line apps of monai_cover (run with ``python -m monai_cover.apps.<name>``)."""
