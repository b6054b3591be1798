# SPDX-License-Identifier: Apache-2.0
"""Every bundle passes the checks model-zoo's CI (``ci/verify_bundle.py``) makes, run as it runs them: on a copy of
the bundle folder alone, ``verify_metadata`` against the schema (kept in the repository, so offline),
``verify_net_in_out network_def`` with ``configs/inference.json`` as the only config (model-zoo's defaults: ``n=1``),
and ``ckpt_export network_def`` of ``models/model.pt`` (made as model-zoo makes one when none is released: the state
dict of ``network_def`` built from ``inference.json``). Each through the real ``python -m monai.bundle``."""

from __future__ import annotations

import json
import shutil
import sys
import warnings

import pytest
import torch
from conftest import BUNDLES, SCHEMA, run_cmd

NAMES = ["cover_pretrain_3d", "cover_finetune_3d", "cover_pretrain_2d", "cover_finetune_2d"]


def _network_def(bundle):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(f=str(bundle / "configs" / "inference.json"))
    parser.read_meta(f=str(bundle / "configs" / "metadata.json"))
    parser["bundle_root"] = str(bundle)
    parser["output_dir"] = str(bundle / "run")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return parser.get_parsed_content("network_def"), parser.get_parsed_content("_meta_")


@pytest.mark.parametrize("name", NAMES)
def test_bundle_passes_model_zoo_checks(name, tmp_path):
    bundle = tmp_path / name
    shutil.copytree(BUNDLES / name, bundle)
    (bundle / "eval").mkdir()
    shutil.copy(SCHEMA, bundle / "eval" / "schema.json")
    meta, infer = ["--meta_file", "configs/metadata.json"], ["--config_file", "configs/inference.json"]
    root = ["--bundle_root", str(bundle)]
    monai_bundle = [sys.executable, "-m", "monai.bundle"]

    proc = run_cmd([*monai_bundle, "verify_metadata", *meta, "--filepath", "eval/schema.json"], cwd=bundle)
    assert proc.returncode == 0 and "metadata is verified with no error" in proc.stdout, proc.stdout[-3000:]

    proc = run_cmd([*monai_bundle, "verify_net_in_out", "network_def", *meta, *infer, *root], cwd=bundle)
    assert proc.returncode == 0 and "data shape of network is verified with no error" in proc.stdout, \
        proc.stdout[-3000:]

    network, metadata = _network_def(bundle)
    torch.manual_seed(0)
    (bundle / "models").mkdir()
    torch.save(network.state_dict(), bundle / "models" / "model.pt")
    ts_file = bundle / "models" / "verify_model.ts"
    proc = run_cmd([*monai_bundle, "ckpt_export", "network_def", "--filepath", str(ts_file), "--ckpt_file",
                    "models/model.pt", *meta, *infer, *root], cwd=bundle)  # fmt: skip
    assert proc.returncode == 0 and ts_file.is_file(), proc.stdout[-3000:]

    # the exported module computes what the eager network computes, with the channels metadata.json promises
    scripted = torch.jit.load(str(ts_file))
    spatial_dims = len(metadata["network_data_format"]["inputs"]["image"]["spatial_shape"])
    x = torch.rand(1, 1, *([32] * spatial_dims), generator=torch.Generator().manual_seed(1))
    network.eval()
    with torch.no_grad():
        expected, got = network(x), scripted(x)
    assert got.shape == expected.shape
    assert got.shape[1] == metadata["network_data_format"]["outputs"]["pred"]["num_channels"]
    assert torch.allclose(got, expected, atol=1e-5)
    assert json.loads((bundle / "configs" / "inference.json").read_text(encoding="utf-8"))["network_def"]


def test_the_shape_check_fails_when_metadata_promises_other_channels(tmp_path):
    bundle = tmp_path / "cover_finetune_3d"
    shutil.copytree(BUNDLES / "cover_finetune_3d", bundle)
    meta_file = bundle / "configs" / "metadata.json"
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    meta["network_data_format"]["outputs"]["pred"]["num_channels"] = 5  # the network has 8 classes
    meta_file.write_text(json.dumps(meta), encoding="utf-8")
    proc = run_cmd([sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file",
                    str(meta_file), "--config_file", "configs/inference.json", "--bundle_root", str(bundle)],
                   cwd=bundle)  # fmt: skip
    assert proc.returncode != 0 and "output channel number `8` doesn't match: `5`" in proc.stdout, proc.stdout[-3000:]
