# SPDX-License-Identifier: Apache-2.0
"""Exports through MONAI's own ``python -m monai.bundle ckpt_export`` / ``onnx_export``: the pretraining feature
extractor and the fine-tuned segmentation network, as TorchScript (loaded and run) and ONNX (run in onnxruntime),
against PyTorch on a crop of a real embedded volume."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from conftest import FINETUNE, PRETRAIN, TINY_FEATURES, run_cmd
from monai.networks.nets import BasicUNet

from monai_cover.networks import FeaturePyramid, finest_level_network

TINY = json.loads(TINY_FEATURES)
#: ONNX parity: |onnxruntime - torch| <= ATOL_REL * max|torch| (float32 kernels differ in summation order)
ATOL_REL = 1e-4


@pytest.fixture(scope="module")
def real_crop() -> torch.Tensor:
    """A 32^3 crop of nilearn's MNI152 T1 (2 mm), scaled to [0, 1]: (1, 1, 32, 32, 32)."""
    from monai_cover.data.demo import demo_volume

    volume, _ = demo_volume("mni152_t1_2mm")
    crop = torch.as_tensor(np.ascontiguousarray(volume[30:62, 40:72, 30:62]), dtype=torch.float32)
    crop = (crop - crop.min()) / (crop.max() - crop.min())
    assert crop.std() > 0.1  # anatomy, not background
    return crop[None, None]


def _trained_looking(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights moved away from their initialisation (norm affine parameters included), so a dropped or zeroed
    tensor in an export shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return net.eval()


def _export(kind: str, net_id: str, config: list, ckpt, out, *extra: str):
    args = [sys.executable, "-m", "monai.bundle", kind, "--net_id", net_id, "--filepath", str(out), "--ckpt_file",
            str(ckpt), "--config_file", str([str(c) for c in config]) if len(config) > 1 else str(config[0]),
            "--features", TINY_FEATURES, *extra]
    proc = run_cmd(args, cwd=out.parent)
    assert proc.returncode == 0 and out.is_file(), proc.stdout[-3000:]


def _onnx_run(path, x: torch.Tensor) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]


CASES = {
    # name: (bundle configs, net_id, the network as the bundle builds it, channels out)
    "feature_extractor": ([PRETRAIN / "configs" / "train.json"], "feature_extractor",
                          lambda: BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=TINY), TINY[-1]),
    "finetuned": ([FINETUNE / "configs" / "train.json"], "network_def",
                  lambda: BasicUNet(spatial_dims=3, in_channels=1, out_channels=8, features=TINY), 8),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_torchscript_and_onnx_exports_match_pytorch(case, real_crop, tmp_path):
    config, net_id, build, channels = CASES[case]
    torch.manual_seed(1)
    net = _trained_looking(build())
    ckpt = tmp_path / "model.pt"
    torch.save(net.state_dict(), ckpt)  # the bundles' models/model.pt layout
    with torch.no_grad():
        reference = finest_level_network(net)(real_crop) if case == "feature_extractor" else net(real_crop)
        if case == "feature_extractor":  # what COVER trained: the pyramid's finest level
            torch.testing.assert_close(reference, FeaturePyramid.from_network(net)(real_crop)[-1])
    assert reference.shape == (1, channels, 32, 32, 32)

    _export("ckpt_export", net_id, config, ckpt, tmp_path / "model.ts")
    scripted = torch.jit.load(str(tmp_path / "model.ts"))
    assert isinstance(scripted, torch.jit.ScriptModule)
    with torch.no_grad():
        torch.testing.assert_close(scripted(real_crop), reference, rtol=1e-5, atol=1e-5)

    _export("onnx_export", net_id, config, ckpt, tmp_path / "model.onnx", "--input_shape", "[1,1,32,32,32]",
            "--use_trace", "True", "--converter_kwargs", "{'dynamo': False, 'input_names': ['image'], "
            "'dynamic_axes': {'image': {0: 'batch'}}}")
    out = _onnx_run(tmp_path / "model.onnx", real_crop)
    assert out.shape == tuple(reference.shape)
    scale = float(reference.abs().max())
    np.testing.assert_allclose(out, reference.numpy(), rtol=0, atol=ATOL_REL * scale)
    two = torch.cat([real_crop, real_crop.flip(2)])  # a dynamic batch of 2
    assert _onnx_run(tmp_path / "model.onnx", two).shape == (2, channels, 32, 32, 32)
