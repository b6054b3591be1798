# SPDX-License-Identifier: Apache-2.0
"""Old public names keep working, with a DeprecationWarning that names the new home."""

from __future__ import annotations

import importlib
import sys
import unittest
import warnings


def _fresh_import(name: str):
    sys.modules.pop(name, None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        module = importlib.import_module(name)
    return module, [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)]


class TestDeprecatedAliases(unittest.TestCase):
    def test_pretext_points_to_baselines_and_methods(self):
        import monai_cover.baselines
        import monai_cover.methods

        pretext, messages = _fresh_import("monai_cover.pretext")
        self.assertTrue(any("monai_cover.baselines" in m and "monai_cover.methods" in m for m in messages), messages)
        self.assertIs(pretext.build_method, monai_cover.methods.build_method)
        self.assertIs(pretext.VoCoCropd, monai_cover.baselines.VoCoCropd)

    def test_diagnostics_points_to_metrics(self):
        import monai_cover.metrics

        diagnostics, messages = _fresh_import("monai_cover.diagnostics")
        self.assertTrue(any("monai_cover.metrics" in m for m in messages), messages)
        self.assertIs(diagnostics.feature_dispersion, monai_cover.metrics.feature_dispersion)

    def test_bundle_utils_points_to_bundle(self):
        import monai_cover.bundle
        import monai_cover.networks

        bundle_utils, messages = _fresh_import("monai_cover.bundle_utils")
        self.assertTrue(any("monai_cover.bundle" in m for m in messages), messages)
        self.assertIs(bundle_utils.export_bundle, monai_cover.bundle.export_bundle)
        self.assertIs(bundle_utils.FeatureLevel, monai_cover.networks.FeatureLevel)

    def test_intensity_transform_moved_to_transforms(self):
        import monai_cover.data
        import monai_cover.transforms

        with self.assertWarnsRegex(DeprecationWarning, "monai_cover.transforms.ScaleIntensityByModalityd"):
            moved = monai_cover.data.ScaleIntensityByModalityd
        self.assertIs(moved, monai_cover.transforms.ScaleIntensityByModalityd)
        with self.assertRaisesRegex(AttributeError, "no attribute 'nope'"):
            monai_cover.data.nope


if __name__ == "__main__":
    unittest.main()
