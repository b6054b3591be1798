# SPDX-License-Identifier: Apache-2.0
"""The 2-D bundles through the real ``python -m monai.bundle run`` (override files over the 3-D configs):
pretraining from a PNG folder (killed and resumed), from DICOM radiographs, from slices of a NIfTI folder and on
the embedded demo; MONOCHROME1 pixel values through the bundle's own loader chain; a 3-D file among PNGs; then
fine-tuning from the 2-D weights (every backbone key loads), evaluation and inference writing masks."""

from __future__ import annotations

import importlib.util
import json
import re
import signal
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import (
    BUNDLES,
    FINETUNE,
    KILLED_EPOCHS,
    PRETRAIN,
    SCHEMA,
    TINY_FEATURES,
    bundle_run,
    checkpoint_epochs,
    kill_and_resume,
    read_events,
    write_volumes,
)
from PIL import Image

from monai_cover.handlers import read_loss_summary

PRETRAIN_2D = BUNDLES / "cover_pretrain_2d"
FINETUNE_2D = BUNDLES / "cover_finetune_2d"
PRE_CONFIGS = [PRETRAIN / "configs" / "train.json", PRETRAIN_2D / "configs" / "train.json"]
FT_CONFIGS = [FINETUNE / "configs" / "train.json", FINETUNE_2D / "configs" / "train.json"]
TINY_2D = ["--patch_size", "[32,32]", "--features", TINY_FEATURES, "--batch_size", "1", "--num_samples", "2",
           "--val_num_samples", "2", "--num_workers", "0", "--val_interval", "1", "--warmup_epochs", "1",
           "--ckpt_interval", "1", "--image_size", "64"]  # fmt: skip


def _helpers():
    spec = importlib.util.spec_from_file_location("dicom_helpers", Path(__file__).parents[1] / "dicom_helpers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _smooth(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 1, 5, 5, generator=gen)
    return torch.nn.functional.interpolate(coarse, size=shape, mode="bilinear", align_corners=True)[0, 0].numpy()


def write_pngs(folder: Path, n: int = 4, rgb: bool = True) -> Path:
    """``n`` smooth grey PNGs (60x70 pixels) and, with ``rgb``, one RGB PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray((_smooth((60, 70), i) * 255).astype(np.uint8)).save(folder / f"xray{i}.png")
    if rgb:
        colour = np.stack([_smooth((60, 70), 10 + c) for c in range(3)], -1)
        Image.fromarray((colour * 255).astype(np.uint8)).save(folder / "zz_colour.png")
    return folder


def _tiny_unet_2d(out_channels: int = 1):
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=2, in_channels=1, out_channels=out_channels, features=json.loads(TINY_FEATURES))


def _val_metrics(stdout: str) -> list[dict[str, float]]:
    rows = re.findall(r"Metrics -- (.*val_ddf_epe: .*)", stdout)  # the per-level level_epe_* come first
    return [{k: float(v) for k, v in re.findall(r"(\w+): ([-\d.e]+)", r)} for r in rows]


@pytest.fixture(scope="module")
def png_run(tmp_path_factory):
    """Pretraining on a PNG folder (4 grey + 1 RGB), SIGKILLed once ``checkpoint_epoch=1.pt`` is written, then
    resumed with ``--epochs`` one more than its newest checkpoint."""
    work = tmp_path_factory.mktemp("pretrain2d")
    data = write_pngs(work / "pngs")
    out = work / "cover_pretrain_2d"
    common = [*TINY_2D, "--dataset_dir", str(data), "--ckpt_n_saved", "1"]
    first, killed_at, epochs, second = kill_and_resume(PRE_CONFIGS, PRETRAIN_2D, out, common, work, "killed.log")
    return {"output_dir": out, "first": first, "second": second, "killed_at": killed_at, "epochs": epochs,
            "data": data}  # fmt: skip


def test_png_folder_pretrain_killed_and_resumed(png_run):
    first, second, out, epochs = png_run["first"], png_run["second"], png_run["output_dir"], png_run["epochs"]
    assert first.returncode == -signal.SIGKILL, first.stdout[-3000:]
    assert png_run["killed_at"] and png_run["killed_at"][-1] < KILLED_EPOCHS
    assert second.returncode == 0, second.stdout[-3000:]
    resumed = png_run["killed_at"][-1]
    assert re.search(rf"Restored all variables from .*checkpoint_epoch={resumed}\.pt", second.stdout)
    assert f"Epoch: {epochs}/{epochs}" in second.stdout
    assert not re.search(rf"Epoch: {resumed}/{epochs}\b", second.stdout)
    assert checkpoint_epochs(out / "checkpoints") == [epochs]
    assert [r["epoch"] for r in read_loss_summary(out / "loss_summary.txt")] == list(range(1, epochs + 1))
    # a 2-D BasicUNet, loaded strictly, and through load_pretrained (unchanged for 2-D) into 3 classes
    _tiny_unet_2d().load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))
    from monai_cover import load_pretrained

    net = _tiny_unet_2d(out_channels=3)
    loaded = load_pretrained(net, out, exclude=r"^final_conv\.")
    assert len(loaded.loaded) == len(net.state_dict()) - 2 and not loaded.missing and not loaded.mismatched
    from monai.networks.nets import BasicUNet

    wider = BasicUNet(spatial_dims=2, in_channels=1, out_channels=1, features=(8, 8, 16, 16, 32, 8))
    with pytest.raises(Exception, match="features"):
        load_pretrained(wider, out)
    ckpt = torch.load(out / "checkpoints" / f"checkpoint_epoch={epochs}.pt", weights_only=True)
    assert ckpt["trainer"]["epoch_length"] == 4  # 4 training images, batch 1
    # the pretext metrics of the 3-D bundle, on the held-out picture
    metrics = _val_metrics(second.stdout)
    assert metrics and {"val_ddf_epe", "val_epe_ratio", "val_nn_correspondence", "val_feature_rank",
                        "val_feature_cosine", "val_overlap_cosine"} <= set(metrics[-1])  # fmt: skip
    assert 0 < metrics[-1]["val_epe_ratio"] < 3 and 0 < metrics[-1]["val_feature_rank"] <= 8
    # TensorBoard: the loss, the learning rate, the pretext metrics and the validation pictures, in 2-D
    events = read_events(out / "logs")
    assert {"train_loss", "learning_rate", "val_epe_ratio", "val_feature_rank"} <= set(events.Tags()["scalars"])
    assert {"val_images/view_a", "val_images/ddf_pred_magnitude"} <= set(events.Tags()["images"])
    # the output is a bundle on its own: configs/train.json is the 3-D base merged with the 2-D override
    merged = json.loads((out / "configs" / "train.json").read_text(encoding="utf-8"))
    assert merged["network_def"]["spatial_dims"] == 2 and merged["patch_size"] == [96, 96]
    assert merged["override_checks"]["slice_volumes"] == ["auto", "always", "never"] and "epochs" in merged
    override = (PRETRAIN_2D / "configs" / "train.json").read_text(encoding="utf-8")
    assert (out / "configs" / "train_override.json").read_text(encoding="utf-8") == override
    from monai.bundle import ConfigParser

    alone = ConfigParser()
    alone.read_config(str(out / "configs" / "train.json"))
    alone["features"] = json.loads(TINY_FEATURES)
    alone.get_parsed_content("network_def").load_state_dict(
        torch.load(out / "models" / "model.pt", weights_only=True)
    )
    # the RGB picture is converted to grey, and said so; the split is the last fifth
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["found"] == 5 and report["counts"]["training"] == 4 and report["counts"]["validation"] == 1
    colour = next(it for it in report["items"] if it["name"] == "zz_colour.png")
    assert colour["status"] == "ok" and [n["code"] for n in colour["notes"]] == ["to_gray"]
    assert colour["files"]["image"]["channels"] == 3 and colour["files"]["image"]["reader"] == "PictureReader"


def test_dicom_radiographs_pretrain(tmp_path):
    helpers = _helpers()
    data = tmp_path / "dicom"
    data.mkdir()
    for i, (photo, modality) in enumerate((("MONOCHROME1", "CR"), ("MONOCHROME2", "DX"))):
        pixels = (_smooth((80, 90), 20 + i) * 4000).astype(np.uint16)
        helpers.write_dicom(data / f"radiograph{i}.dcm", pixels, photometric=photo, modality=modality)
    out = tmp_path / "out"
    proc = bundle_run(PRE_CONFIGS, PRETRAIN_2D, out, *TINY_2D, "--dataset_dir", str(data), "--epochs", "1")
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["training"] == 1 and report["counts"]["validation"] == 1
    for it in report["items"]:
        assert it["files"]["image"]["reader"] == "SimpleITKReader(nifti=False)"
        assert it["files"]["image"]["spatial_shape"] == [90, 80, 1]  # one frame: a 2-D image
    assert _val_metrics(proc.stdout)
    _tiny_unet_2d().load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))


def _loader_chain(**overrides):
    from monai.bundle import ConfigParser
    from monai.transforms import Compose

    parser = ConfigParser()
    parser.read_config([str(c) for c in PRE_CONFIGS])
    for k, v in overrides.items():
        parser[k] = v
    return Compose(parser.get_parsed_content("loader_transforms"))


def test_monochrome1_radiograph_is_inverted_by_the_bundle_chain(tmp_path):
    """The stored values of a MONOCHROME1 file are dark where high: after the bundle's loader chain (reader, squeeze,
    inversion, resize to image_size, percentiles) the stored-high half is dark (0) and the stored-low half bright
    (1); the same values stored as MONOCHROME2 come out the other way round."""
    helpers = _helpers()
    stored = np.full((40, 60), 100, np.uint16)
    stored[:, :30] = 4000  # columns 0..29 (x) stored high
    chain = _loader_chain(image_size=30)
    out = {}
    for photo in ("MONOCHROME1", "MONOCHROME2"):
        path = helpers.write_dicom(tmp_path / f"{photo}.dcm", stored, photometric=photo)
        img = chain({"image": str(path), "modality": "CR"})["image"]
        assert tuple(img.shape) == (1, 30, 20)  # x first, longest side resized to image_size
        out[photo] = img[0]
    high, low = slice(0, 14), slice(16, 30)  # x ranges away from the resampled edge
    assert float(out["MONOCHROME1"][high].max()) == 0.0 and float(out["MONOCHROME1"][low].min()) == 1.0
    assert float(out["MONOCHROME2"][high].min()) == 1.0 and float(out["MONOCHROME2"][low].max()) == 0.0


def test_rgb_picture_to_grey_in_the_bundle_chain(tmp_path):
    rgb = np.zeros((10, 20, 3), np.uint8)
    rgb[:, :10] = (255, 0, 0)  # red half
    rgb[:, 10:] = (0, 0, 255)  # blue half
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    img = _loader_chain(image_size=0, intensity="none")({"image": str(tmp_path / "rgb.png"), "modality": "unknown"})
    assert tuple(img["image"].shape) == (1, 20, 10)
    assert np.allclose(img["image"][0, :10].numpy(), 0.299 * 255, atol=1e-3)
    assert np.allclose(img["image"][0, 10:].numpy(), 0.114 * 255, atol=1e-3)


def test_slices_of_a_nifti_folder_pretrain(tmp_path):
    data = write_volumes(tmp_path / "volumes", n=3, shape=(40, 44, 36))
    out = tmp_path / "out"
    proc = bundle_run(PRE_CONFIGS, PRETRAIN_2D, out, *TINY_2D, "--dataset_dir", str(data), "--epochs", "1",
                      "--slice_axis", "1", "--min_slice_foreground", "0.1")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["training"] == 2 and report["counts"]["validation"] == 1
    for it in report["items"]:
        assert [n["code"] for n in it["notes"] if n["code"] != "margin_padded"] == ["sliced"]
        assert "along axis 1" in it["notes"][0]["message"]
    assert report["settings"]["slice_axis"] == 1 and report["settings"]["slice_volumes"] == "auto"
    assert _val_metrics(proc.stdout)
    _tiny_unet_2d().load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))


@pytest.mark.parametrize("method", ["voxel_infonce", "pcrlv2", "voco"])
def test_2d_baseline_methods(method, tmp_path):
    """Every baseline pretrains in 2D through the same override file; the weights are a stock 2D BasicUNet."""
    data = write_pngs(tmp_path / "pngs", n=4, rgb=False)
    out = tmp_path / "out"
    proc = bundle_run(PRE_CONFIGS, PRETRAIN_2D, out, *TINY_2D, "--dataset_dir", str(data), "--epochs", "1",
                      "--method", method)
    assert proc.returncode == 0, proc.stdout[-4000:]
    _tiny_unet_2d().load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))  # strict keys
    rows = read_loss_summary(out / "loss_summary.txt")
    assert [r["epoch"] for r in rows] == [1] and method in (out / "loss_summary.txt").read_text(encoding="utf-8")
    ckpt = torch.load(out / "checkpoints" / "checkpoint_epoch=1.pt", weights_only=True)
    assert any(k.startswith("loss.") for k in ckpt["model"]), "the loss's heads are not checkpointed"


def test_3d_file_in_a_png_folder_is_named(tmp_path):
    data = write_pngs(tmp_path / "pngs", n=3, rgb=False)
    vol = np.random.default_rng(0).random((20, 22, 12)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(data / "stray_volume.nii.gz"))
    out = tmp_path / "out"
    proc = bundle_run(PRE_CONFIGS, PRETRAIN_2D, out, *TINY_2D, "--dataset_dir", str(data), "--epochs", "1")
    assert proc.returncode != 0
    assert re.search(r"ERROR: 1 of 4 data item\(s\) cannot be trained on", proc.stdout), proc.stdout[-3000:]
    assert re.search(r"stray_volume\.nii\.gz: volume_among_images: a 3-D volume \(20x22x12\) among 2-D images; "
                     r"pass --slice_volumes always", proc.stdout)  # fmt: skip
    assert not (out / "checkpoints").exists() or not list((out / "checkpoints").iterdir())


def test_embedded_2d_demo(tmp_path):
    for package in ("nilearn", "slicerio", "data_store"):
        pytest.importorskip(package)
    out = tmp_path / "out"
    proc = bundle_run(PRE_CONFIGS, PRETRAIN_2D, out, *TINY_2D, "--epochs", "1")
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"]["training"] == 4 and report["counts"]["validation"] == 2 and report["counts"]["bad"] == 0
    readers = {it["name"]: it["files"]["image"]["reader"] for it in report["items"]}
    assert readers["chest_cr"] == readers["extremity_cr"] == "SimpleITKReader(nifti=False)"
    assert readers["chest_ct"] == "SimpleITKReader(nifti=False)" and readers["mni152_t1_2mm"] == "NibabelReader"
    metrics = _val_metrics(proc.stdout)
    assert metrics and 0 < metrics[-1]["val_epe_ratio"] < 3


def _write_pairs(folder: Path, n: int, seed: int) -> list[dict]:
    """``n`` 48x56 PNG images with a bright rectangle (class 1) and a mid-grey disc (class 2), and their masks."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    items = []
    yy, xx = np.mgrid[:48, :56]
    for i in range(n):
        img = rng.normal(30, 5, (48, 56))
        lab = np.zeros((48, 56), np.uint8)
        r0, c0 = rng.integers(2, 20), rng.integers(2, 20)
        lab[r0 : r0 + 12, c0 : c0 + 14] = 1
        disc = (yy - rng.integers(30, 40)) ** 2 + (xx - rng.integers(34, 44)) ** 2 < 64
        lab[disc] = 2
        img[lab == 1], img[lab == 2] = 220, 120
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"img{seed}_{i}.png")
        Image.fromarray(lab).save(folder / f"img{seed}_{i}_mask.png")
        items.append({"image": f"img{seed}_{i}.png", "label": f"img{seed}_{i}_mask.png"})
    return items


def test_finetune_from_2d_weights_then_evaluate_and_infer(png_run, tmp_path):
    assert png_run["second"].returncode == 0, png_run["second"].stdout[-3000:]
    data = tmp_path / "pairs"
    datalist = {"training": _write_pairs(data, 4, 0), "validation": _write_pairs(data, 2, 1),
                "labels": {"0": "background", "1": "rectangle", "2": "disc"}}  # fmt: skip
    (data / "dataset.json").write_text(json.dumps(datalist), encoding="utf-8")
    out = tmp_path / "cover_finetune_2d"
    tiny = ["--patch_size", "[32,32]", "--features", TINY_FEATURES, "--batch_size", "1", "--num_samples", "2",
            "--num_workers", "0", "--val_interval", "1", "--num_classes", "3", "--dataset_dir", str(data)]  # fmt: skip
    pretrained = png_run["output_dir"]
    proc = bundle_run(FT_CONFIGS, FINETUNE_2D, out, *tiny, "--epochs", "2", "--pretrained_dir", str(pretrained))
    assert proc.returncode == 0, proc.stdout[-4000:]
    report = json.loads((out / "pretrained_load_report.json").read_text(encoding="utf-8"))
    assert report["missing"] == [] and report["unexpected"] == [] and report["mismatched"] == {}
    assert sorted(report["excluded"]) == ["final_conv.bias", "final_conv.weight"]
    assert report["num_loaded"] == report["num_network_keys"] - 2
    weights = torch.load(pretrained / "models" / "model.pt", weights_only=True)
    assert set(report["loaded"]) == {k for k in weights if not k.startswith("final_conv.")}
    assert all(w.ndim in (1, 4) for w in weights.values() if w.is_floating_point())  # 2-D convolutions
    dice = [float(v) for v in re.findall(r"Metrics -- val_mean_dice: ([\d.]+)", proc.stdout)]
    assert len(dice) == 2 and all(0.0 <= d <= 1.0 for d in dice)
    assert "val_mean_dice per class: rectangle " in proc.stdout and "disc" in proc.stdout
    for rel in ("models/model.pt", "models/model_final.pt", "checkpoints/checkpoint_epoch=2.pt"):
        assert (out / rel).is_file(), rel
    _tiny_unet_2d(3).load_state_dict(torch.load(out / "models" / "model.pt", weights_only=True))

    evaluate = FINETUNE / "configs" / "evaluate.json"
    proc = bundle_run([*FT_CONFIGS, evaluate], FINETUNE_2D, out, *tiny, "--pretrained", "false")
    assert proc.returncode == 0, proc.stdout[-4000:]
    rows = (out / "eval" / "val_mean_dice_per_class.csv").read_text(encoding="utf-8").splitlines()
    assert rows[0] == "filename,rectangle,disc" and len(rows) == 2 + 1 + 1 and rows[-1].startswith("mean,")
    assert "val_mean_dice" in (out / "eval" / "metrics.csv").read_text(encoding="utf-8")

    infer_dir = tmp_path / "to_segment"
    infer_dir.mkdir()
    for name in ("img1_0.png", "img1_1.png"):
        (infer_dir / name).write_bytes((data / name).read_bytes())
    proc = bundle_run([FINETUNE_2D / "configs" / "inference.json"], FINETUNE_2D, out, "--infer_input", str(infer_dir))
    assert proc.returncode == 0, proc.stdout[-4000:]
    for name in ("img1_0", "img1_1"):
        seg = nib.load(str(out / "segmentations" / f"{name}_seg.nii.gz"))
        values = np.asarray(seg.dataobj)
        assert values.shape[:2] == (56, 48)  # the picture's own grid (x first, as PIL reads it)
        assert set(np.unique(values)) <= {0, 1, 2}
    names = json.loads((out / "segmentations" / "classes.json").read_text(encoding="utf-8"))
    assert names == {"0": "background", "1": "rectangle", "2": "disc"}


def test_2d_metadata_and_networks(tmp_path):
    import shutil
    import warnings

    from monai.bundle import verify_metadata, verify_net_in_out

    schema = tmp_path / "schema.json"
    shutil.copy(SCHEMA, schema)
    for bundle in (PRETRAIN_2D, FINETUNE_2D):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    tiny = json.loads(TINY_FEATURES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        verify_net_in_out(net_id="feature_extractor", meta_file=str(PRETRAIN_2D / "configs" / "metadata.json"),
                          config_file=[str(c) for c in PRE_CONFIGS], device="cpu", n=2, features=tiny,
                          **{"_meta_#network_data_format#outputs#pred#num_channels": tiny[-1]})  # fmt: skip
        verify_net_in_out(net_id="network_def", meta_file=str(FINETUNE_2D / "configs" / "metadata.json"),
                          config_file=[str(c) for c in FT_CONFIGS], device="cpu", n=2, features=tiny)  # fmt: skip
    meta = json.loads((PRETRAIN_2D / "configs" / "metadata.json").read_text(encoding="utf-8"))
    # model-zoo's verify_net_in_out uses n=1: 32 pixels keep two at BasicUNet's bottleneck (16 would leave one,
    # which instance norm refuses)
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == ["32*n", "32*n"]
    assert list(meta["network_data_format"]["outputs"]) == ["pred"]  # what inference.json's network_def returns


@pytest.mark.parametrize("bundle", [PRETRAIN_2D, FINETUNE_2D])
def test_every_2d_override_is_documented(bundle):
    readme = (bundle / "docs" / "README.md").read_text(encoding="utf-8")
    for config in sorted((bundle / "configs").glob("*.json")):
        if config.name == "metadata.json":
            continue
        for key in json.loads(config.read_text(encoding="utf-8")):
            plain = key.lstrip("+")
            found = f"`{plain}`" in readme or f"`{plain.split('#')[0]}`" in readme
            assert found, f"{bundle.name}/docs/README.md lacks `{key}` ({config.name})"
        for key, spec in json.loads(config.read_text(encoding="utf-8")).get("+override_checks", {}).items():
            for value in spec if isinstance(spec, list) else []:
                assert f"`{value}`" in readme or not value, f"`{key}` value `{value}` not in the README"


def test_2d_overrides_checked_before_anything_runs():
    from monai_cover.bundle import OverrideError, check_overrides
    from monai_cover.bundle.overrides import _load_config

    main = "/site-packages/monai/bundle/__main__.py"
    configs = str([str(c) for c in PRE_CONFIGS])
    checks = _load_config([str(c) for c in PRE_CONFIGS]).get("override_checks")

    def check(*args):
        return check_overrides(checks, argv=[main, "run", "--config_file", configs, *args])

    assert check("--slice_axis", "1", "--slice_volumes", "always", "--modality", "CR", "--image_size", "0")
    with pytest.raises(OverrideError, match="--slice_volumes 'sometimes'"):
        check("--slice_volumes", "sometimes")
    with pytest.raises(OverrideError, match="did you mean --slice_axis"):
        check("--slice_axes", "1")
    assert check("--method", "pcrlv2")  # every baseline runs in 2D
    with pytest.raises(OverrideError, match="--method 'simclr'"):
        check("--method", "simclr")
