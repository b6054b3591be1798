# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import unittest

import torch
from monai.engines.utils import PrepareBatch

from monai_cover.engines import CoverPrepareBatch


class TestCoverPrepareBatch(unittest.TestCase):
    def test_layout(self):
        batch = {
            "view_a": torch.rand(2, 1, 4, 4),
            "view_b": torch.rand(2, 1, 4, 4),
            "ddf": torch.rand(2, 2, 4, 4),
            "overlap": torch.ones(2, 1, 4, 4),
            "image": torch.rand(2, 1, 6, 6),
        }
        prep = CoverPrepareBatch()
        self.assertIsInstance(prep, PrepareBatch)
        inputs, targets, args, kwargs = prep(batch, torch.device("cpu"), non_blocking=True)
        self.assertEqual(inputs.data_ptr(), batch["view_a"].data_ptr())
        self.assertEqual(set(targets), {"ddf", "overlap"})
        self.assertTrue(torch.equal(targets["ddf"], batch["ddf"]))
        self.assertEqual(len(args), 1)
        self.assertTrue(torch.equal(args[0], batch["view_b"]))
        self.assertEqual(kwargs, {})
        # dtype kwargs go to Tensor.to; a batch without overlap gives a target without it
        inputs, targets, _, _ = prep({k: v for k, v in batch.items() if k != "overlap"}, None, dtype=torch.float64)
        self.assertEqual(inputs.dtype, torch.float64)
        self.assertEqual(set(targets), {"ddf"})

    def test_custom_keys_and_errors(self):
        prep = CoverPrepareBatch("a", "b", "flow", "eps")
        batch = {"a": torch.zeros(1, 1, 2, 2), "b": torch.ones(1, 1, 2, 2), "flow": torch.zeros(1, 2, 2, 2)}
        inputs, targets, args, _ = prep(batch)
        self.assertEqual(float(args[0].sum()), 4.0)
        with self.assertRaisesRegex(KeyError, "'b'"):
            prep({"a": batch["a"], "flow": batch["flow"]})
        with self.assertRaisesRegex(ValueError, "distinct"):
            CoverPrepareBatch("a", "a")
        with self.assertRaisesRegex(TypeError, "dict"):
            prep(torch.zeros(1))


if __name__ == "__main__":
    unittest.main()
