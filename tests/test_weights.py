# SPDX-License-Identifier: Apache-2.0
"""monai_cover.weights.load_pretrained: sources, renaming, reports and errors."""

from __future__ import annotations

import logging
import os
import tempfile
import unittest

import pytest
import torch
from monai.networks.nets import BasicUNet
from parameterized import parameterized

from monai_cover.weights import (
    LoadReport,
    RefusedPickleError,
    WeightsMismatchError,
    load_pretrained,
    resolve_weights_path,
)

FEATURES = (4, 4, 8, 8, 16, 4)


def _unet(out_channels: int = 2, seed: int = 0) -> BasicUNet:
    torch.manual_seed(seed)
    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=out_channels, features=FEATURES)


class Wrapper(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = _unet(seed=5)
        self.extra = torch.nn.Linear(2, 2)


class TestLoadPretrained(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = _unet(seed=1)
        self.bundle = os.path.join(self.tmp.name, "bundle")
        os.makedirs(os.path.join(self.bundle, "models"))
        self.model_pt = os.path.join(self.bundle, "models", "model.pt")
        torch.save(self.src.state_dict(), self.model_pt)

    def tearDown(self):
        self.tmp.cleanup()

    def _assert_same(self, dst, keys=None):
        src_sd, dst_sd = self.src.state_dict(), dst.state_dict()
        for k in keys if keys is not None else src_sd:
            self.assertTrue(torch.equal(src_sd[k], dst_sd[k]), k)

    @parameterized.expand([("bundle_folder",), ("models_folder",), ("file",), ("state_dict",), ("checkpoint_dict",)])
    def test_sources(self, kind):
        source = {
            "bundle_folder": self.bundle,
            "models_folder": os.path.join(self.bundle, "models"),
            "file": self.model_pt,
            "state_dict": self.src.state_dict(),
            "checkpoint_dict": {"model": self.src.state_dict(), "epoch": 3},
        }[kind]
        dst = _unet(seed=2)
        report = load_pretrained(dst, source)
        self.assertIsInstance(report, LoadReport)
        self.assertEqual(len(report.loaded), len(dst.state_dict()))
        self.assertEqual((report.missing, report.unexpected, report.mismatched), ([], [], {}))
        self._assert_same(dst)

    def test_mismatched_final_conv_and_exclude(self):
        dst = _unet(out_channels=5, seed=2)
        before = {k: v.clone() for k, v in dst.state_dict().items()}
        with self.assertRaises(WeightsMismatchError) as ctx:  # refused unless asked for: nothing loaded
            load_pretrained(dst, self.bundle)
        self.assertIn("2 of the 82 tensors of BasicUNet have another shape", str(ctx.exception))
        self.assertIn("Only the final convolution differs", str(ctx.exception))
        self.assertIn("exclude=r'^final_conv\\.'", str(ctx.exception))
        self.assertTrue(all(torch.equal(v, before[k]) for k, v in dst.state_dict().items()))
        report = load_pretrained(dst, self.bundle, partial=True)
        self.assertEqual(sorted(report.mismatched), ["final_conv.bias", "final_conv.weight"])
        self.assertEqual(len(report.loaded), len(dst.state_dict()) - 2)
        report = load_pretrained(_unet(out_channels=5), self.bundle, exclude=r"^final_conv\.")
        self.assertEqual(report.mismatched, {})
        self.assertEqual(sorted(report.excluded), ["final_conv.bias", "final_conv.weight"])

    def test_prefix_source_prefix_mapping(self):
        dst = Wrapper()
        report = load_pretrained(dst, self.bundle, prefix="encoder.")
        self.assertEqual(len(report.loaded), len(self.src.state_dict()))
        self.assertEqual(sorted(report.missing), ["extra.bias", "extra.weight"])
        self._assert_same(dst.encoder)
        # a full CoverNet-like checkpoint: take the backbone out of it, DDP "module." prefix dropped
        full = {f"module.backbone.{k}": v for k, v in self.src.state_dict().items()}
        full["module.head.w"] = torch.zeros(3)
        dst = _unet(seed=3)
        report = load_pretrained(dst, full, source_prefix="backbone.")
        self.assertEqual((report.missing, report.unexpected), ([], []))
        self._assert_same(dst)
        # an explicit rename
        sd = self.src.state_dict()
        sd["renamed_bias"] = sd.pop("final_conv.bias")
        dst = _unet(seed=3)
        report = load_pretrained(dst, sd, mapping={"renamed_bias": "final_conv.bias"})
        self.assertEqual(report.missing, [])
        self._assert_same(dst, ["final_conv.bias"])

    def test_nothing_matches_is_a_clear_error(self):
        with self.assertRaisesRegex(ValueError, "no weights .* match .*prefix"):
            load_pretrained(_unet(), {"foo.weight": torch.zeros(1)})
        with self.assertRaises(WeightsMismatchError) as ctx:
            load_pretrained(Wrapper(), self.bundle)  # keys lack the "encoder." prefix
        text = str(ctx.exception)
        # a name problem, told as such, with examples from both sides and what to set
        self.assertIn("no weights from", text)
        self.assertIn("Names: 84 of the network's 84 key(s) have no tensor of that name in the file", text)
        self.assertIn("with the prefix 'encoder.' in front: pass prefix='encoder.'", text)
        self.assertIn("network ['encoder.conv_0.conv_0.conv.weight',", text)
        self.assertIn("vs file ['conv_0.conv_0.conv.weight',", text)
        self.assertIn("prefix=", text)
        self.assertNotIn("Shapes:", text)

    def test_other_widths_is_a_shape_error_naming_the_features(self):
        dst = BasicUNet(spatial_dims=3, in_channels=1, out_channels=2, features=(8, 8, 16, 16, 32, 8))
        with self.assertRaises(WeightsMismatchError) as ctx:
            load_pretrained(dst, self.bundle)
        text = str(ctx.exception)
        self.assertIn(f"tensors from {self.model_pt} match BasicUNet", text)
        self.assertIn("Shapes: ", text)
        self.assertIn("'conv_0.conv_0.conv.weight': file (4, 1, 3, 3, 3) vs network (8, 1, 3, 3, 3)", text)
        self.assertIn("the file holds a BasicUNet with features=(4, 4, 8, 8, 16, 4), the network has "
                      "features=(8, 8, 16, 16, 32, 8). Build the network with features=(4, 4, 8, 8, 16, 4)", text)
        self.assertNotIn("Names:", text)  # the names line up: not advised to set a prefix
        self.assertNotIn("Set source_prefix", text)
        # another number of classes: only the head differs, and the diagnosis says what to exclude
        report = load_pretrained(_unet(out_channels=5), self.bundle, partial=True)
        diagnosis = report.diagnosis(_unet(out_channels=5), self.src.state_dict())
        self.assertIn("Only the final convolution differs", diagnosis)

    @parameterized.expand([("cover_net", "backbone.", None), ("checkpoint", "backbone.", "model"),
                           ("baseline_checkpoint", "network.backbone.", "model")])  # fmt: skip
    def test_own_files_load_with_their_prefix_stripped(self, kind, prefix, key):
        state = {prefix + k: v for k, v in self.src.state_dict().items()}
        state[prefix.replace("backbone.", "") + "head.projections.0.0.weight"] = torch.zeros(2, 4, 1, 1, 1)
        content = state if key is None else {key: state, "optimizer": {"state": {}, "param_groups": []},
                                              "trainer": {"epoch": 3, "iteration": 6}}  # fmt: skip
        path = os.path.join(self.tmp.name, f"{kind}.pt")
        torch.save(content, path)
        dst = _unet(seed=4)
        with self.assertLogs("monai_cover.weights", level=logging.INFO) as logs:
            report = load_pretrained(dst, path)
        self.assertEqual(report.stripped_prefix, prefix)
        self.assertEqual((len(report.loaded), report.missing, report.mismatched), (len(dst.state_dict()), [], {}))
        self.assertTrue(any(f"stripped the key prefix {prefix!r}" in line for line in logs.output))
        self._assert_same(dst)

    def test_strict_and_logging(self):
        with self.assertRaisesRegex(RuntimeError, "strict=True"):
            load_pretrained(Wrapper(), self.bundle, prefix="encoder.", strict=True)
        with self.assertLogs("monai_cover.weights", level=logging.INFO) as logs:
            load_pretrained(_unet(), self.bundle)
        self.assertTrue(any("loaded" in line and "missing" in line for line in logs.output))

    def test_weights_only_and_missing_sources(self):
        evil = os.path.join(self.tmp.name, "evil.pt")
        torch.save({"model": self.src.state_dict(), "obj": Wrapper()}, evil)  # a pickled module: refused
        with self.assertRaises(RefusedPickleError) as ctx:
            load_pretrained(_unet(), evil)
        text = str(ctx.exception)
        self.assertTrue(text.startswith(f"{evil}: refused. The file holds pickled Python objects (e.g. "))
        self.assertIn("Wrapper", text)
        self.assertIn("torch.save(model.state_dict()", text)
        self.assertNotIn("weights_only=False", text)  # never the advice to unpickle it anyway
        self.assertIsNone(ctx.exception.__cause__)
        self.assertIsInstance(ctx.exception, ValueError)
        with self.assertRaises(FileNotFoundError):
            resolve_weights_path(os.path.join(self.tmp.name, "nothing"))
        with self.assertRaises(FileNotFoundError):
            load_pretrained(_unet(), self.tmp.name)  # a folder without models/model.pt


if __name__ == "__main__":
    unittest.main()


def test_safetensors_round_trip_and_folder_resolution(tmp_path):
    from monai.networks.nets import BasicUNet

    from monai_cover.weights import load_pretrained, resolve_weights_path, save_safetensors

    torch.manual_seed(0)
    src = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    state = src.state_dict()
    state["alias.weight"] = state["final_conv.weight"]  # shared memory, which safetensors refuses as it is
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    torch.save(src.state_dict(), models / "model.pt")
    save_safetensors(models / "model.pt", models / "model.safetensors")
    save_safetensors(state, tmp_path / "shared.safetensors")
    from safetensors.torch import load_file

    assert torch.equal(load_file(str(tmp_path / "shared.safetensors"))["alias.weight"], state["final_conv.weight"])
    (models / "model.pt").unlink()  # a bundle shipped with safetensors only
    assert resolve_weights_path(tmp_path / "run") == models / "model.safetensors"
    dst = BasicUNet(spatial_dims=2, in_channels=1, out_channels=2, features=(4, 4, 8, 8, 16, 4))
    report = load_pretrained(dst, tmp_path / "run", strict=True)
    assert report.source.endswith("model.safetensors") and len(report.loaded) == len(src.state_dict())
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match="bad.safetensors: not a readable safetensors file"):
        load_pretrained(dst, tmp_path / "bad.safetensors")


def test_2d_weights_into_a_3d_network_are_refused():
    src = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    dst = BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    with pytest.raises(WeightsMismatchError) as e:
        load_pretrained(dst, src.state_dict())
    text = str(e.value)
    assert "23 of the 82 tensors of BasicUNet have another shape in a state dict; nothing was loaded" in text
    assert "'conv_0.conv_0.conv.weight': file (4, 1, 3, 3) vs network (4, 1, 3, 3, 3)" in text
    assert "The file holds a 2-D network" in text and "the network is 3-D" in text and "spatial_dims=2" in text
    assert "partial=True" in text
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())
    with pytest.raises(WeightsMismatchError, match="the file holds a 3-D network|The file holds a 3-D network"):
        load_pretrained(BasicUNet(spatial_dims=2, features=(4, 4, 8, 8, 16, 4)), dst.state_dict())


def test_torchscript_and_truncated_files(tmp_path):
    net = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    torch.jit.save(torch.jit.script(net), str(tmp_path / "model.ts"))
    fresh = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(4, 4, 8, 8, 16, 4))
    report = load_pretrained(fresh, tmp_path / "model.ts", strict=True)  # its state dict, no weights_only advice
    assert len(report.loaded) == len(net.state_dict())
    assert all(torch.equal(fresh.state_dict()[k], v) for k, v in net.state_dict().items())
    torch.save(net.state_dict(), tmp_path / "model.pt")
    data = (tmp_path / "model.pt").read_bytes()
    (tmp_path / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=f"{tmp_path / 'model.pt'}: not a complete weights file \\({len(data) // 2} "
                                         "bytes; truncated"):
        load_pretrained(fresh, tmp_path)
