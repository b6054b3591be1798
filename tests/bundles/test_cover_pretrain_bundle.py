# SPDX-License-Identifier: Apache-2.0
"""The cover_pretrain_3d bundle: CLI run + kill/resume, torchrun (gloo, 2 processes), ConfigWorkflow on
the embedded real demo data, metadata against the shipped schema, network in/out."""

from __future__ import annotations

import json
import re
import shutil
import signal
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import (
    KILLED_EPOCHS,
    PRETRAIN,
    SCHEMA,
    TINY_FEATURES,
    TINY_PRETRAIN,
    bundle_args,
    bundle_run,
    checkpoint_epochs,
    read_events,
    subprocess_env,
    verify_net,
    write_volumes,
)

from monai_cover.handlers import read_loss_summary

CONFIG = PRETRAIN / "configs" / "train.json"
META = PRETRAIN / "configs" / "metadata.json"


def _tiny_unet():
    from monai.networks.nets import BasicUNet

    return BasicUNet(spatial_dims=3, in_channels=1, out_channels=1, features=json.loads(TINY_FEATURES))


def test_killed_run_resumes_from_last_checkpoint(pretrain_run):
    first, second, out = pretrain_run["first"], pretrain_run["second"], pretrain_run["output_dir"]
    killed_at, epochs = pretrain_run["killed_at"], pretrain_run["resumed_epochs"]
    # the first run was SIGKILLed (not a clean exit) after epoch 1 was checkpointed, long before its last epoch
    assert first.returncode == -signal.SIGKILL, first.stdout[-3000:]
    assert killed_at and killed_at[-1] < KILLED_EPOCHS, killed_at
    assert f"Epoch: 1/{KILLED_EPOCHS}" in first.stdout and f"Epoch: {KILLED_EPOCHS}/{KILLED_EPOCHS}" not in first.stdout
    assert second.returncode == 0, second.stdout[-3000:]
    resumed_from = killed_at[-1]
    assert re.search(rf"Restored all variables from .*checkpoint_epoch={resumed_from}\.pt", second.stdout), (
        second.stdout[-3000:]
    )
    # the second run continued after the checkpointed epoch: it trained no iteration of an earlier epoch
    assert f"Epoch: {epochs}/{epochs}" in second.stdout
    assert not re.search(rf"Epoch: {resumed_from}/{epochs}\b", second.stdout), second.stdout[-3000:]
    # --ckpt_n_saved 1 counts across the two runs: the killed run's checkpoint is gone, only the newest is kept
    assert checkpoint_epochs(out / "checkpoints") == [epochs]
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"checkpoint_epoch={epochs}.pt"]
    # the killed run's lock (its pid no longer runs) was taken over, with a warning naming it
    assert re.search(r"took over the lock left by a run that is no longer running \(pid \d+", second.stdout)
    assert (out / ".monai_cover.lock").read_text(encoding="utf-8") == ""  # released at the end
    ckpt = torch.load(out / "checkpoints" / f"checkpoint_epoch={epochs}.pt", weights_only=True)
    assert set(ckpt) == {"model", "optimizer", "lr_scheduler", "trainer", "rng"}  # rng: the random states
    # ignite keeps no epoch counter: the iterations are those of all the epochs so far
    assert ckpt["trainer"]["iteration"] == epochs * ckpt["trainer"]["epoch_length"]
    # the loss summary keeps the epochs of the killed run and adds the resumed one
    rows = read_loss_summary(out / "loss_summary.txt")
    assert [r["epoch"] for r in rows] == list(range(1, epochs + 1))


def test_outputs_and_model_pt_is_a_basicunet_state_dict(pretrain_run):
    out = pretrain_run["output_dir"]
    for rel in (
        "models/model.pt",
        "models/cover_net.pt",
        "models/model_best.pt",
        "loss_summary.txt",
        "configs/train.json",
        "configs/metadata.json",
        "LICENSE",
    ):
        assert (out / rel).is_file(), rel
    assert list((out / "logs").glob("events.out.tfevents.*")), "no TensorBoard logs"
    state = torch.load(out / "models" / "model.pt", weights_only=True)
    net = _tiny_unet()
    net.load_state_dict(state)  # strict: exactly the stock BasicUNet keys
    from safetensors.torch import load_file

    beside = load_file(str(out / "models" / "model.safetensors"))  # the same weights, for hubs that do not unpickle
    assert beside.keys() == state.keys() and all(torch.equal(beside[k], state[k]) for k in state)
    text = (out / "loss_summary.txt").read_text(encoding="utf-8")
    assert "epoch\titerations\tfirst\tlast\tmin\tmean" in text and "mean loss epoch 1" in text
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["counts"] == {"found": 3, "training": 2, "validation": 1, "testing": 0, "skipped": 0, "bad": 0,
                                "ignored": 0}  # fmt: skip
    assert report["dataset"]["type"] == "cache" and (out / "data_report.md").is_file()
    # the bundle folder itself was not written to (it may be a read-only install)
    assert pretrain_run["bundle_before"] == pretrain_run["bundle_after"]


def test_load_pretrained_and_monai_bundle_load(pretrain_run, tmp_path, monkeypatch):
    import monai

    from monai_cover.weights import load_pretrained

    out = pretrain_run["output_dir"]
    net = _tiny_unet()
    report = load_pretrained(net, out)
    assert len(report.loaded) == len(net.state_dict()) and not report.missing and not report.unexpected
    # monai.bundle.load on the run's folder, which export_bundle made a complete bundle
    net2 = _tiny_unet()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = monai.bundle.load(name=out.name, bundle_dir=str(out.parent), model=net2, source="monaihosting")
    saved = torch.load(out / "models" / "model.pt", weights_only=True)
    for k, v in saved.items():
        assert torch.equal(loaded.state_dict()[k], v), k
    # model=None: monai builds network_def (the stock BasicUNet) from the bundle's configs/train.json, through the
    # workflow's initialize only: no lock taken, no data read, nothing written (output_dir defaults to ./runs/...)
    monkeypatch.chdir(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        built = monai.bundle.load(
            name=out.name, bundle_dir=str(out.parent), net_override={"features": json.loads(TINY_FEATURES)}
        )
    assert type(built).__name__ == "BasicUNet"
    assert all(torch.equal(built.state_dict()[k], v) for k, v in saved.items())
    assert list(tmp_path.iterdir()) == []


def test_config_workflow_on_embedded_demo(tmp_path):
    pytest.importorskip("nilearn")
    pytest.importorskip("slicerio")
    from monai.bundle import ConfigWorkflow

    overrides = {
        "bundle_root": str(PRETRAIN),
        "output_dir": str(tmp_path / "out"),
        "epochs": 1,
        "patch_size": [32, 32, 32],
        "features": json.loads(TINY_FEATURES),
        "batch_size": 1,
        "num_samples": 1,
        "val_num_samples": 1,
        "val_interval": 1,
        "spacing": [4.0, 4.0, 4.0],
        "num_workers": 0,
        "dataset_type": "persistent",  # the CLI tests use the default CacheDataset
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wf = ConfigWorkflow(config_file=str(CONFIG), meta_file=str(META), workflow_type="train", **overrides)
        wf.initialize()
        assert wf.check_properties() in (None, [])
        wf.run()
        wf.finalize()
    out = tmp_path / "out"
    assert (out / "models" / "model.pt").is_file() and (out / "loss_summary.txt").is_file()
    assert len(read_loss_summary(out / "loss_summary.txt")) == 1
    assert list((out / "cache" / "persistent").glob("*.pt")), "PersistentDataset cache not written"
    # the pre-flight check ran on the demo's 4 volumes
    report = json.loads((out / "data_report.json").read_text(encoding="utf-8"))
    assert report["summary"] == "found 4, training on 3, validating on 1, skipped 0"
    assert report["dataset"]["type"] == "persistent" and "--dataset_type persistent" in report["dataset"]["reason"]
    readers = {Path(it["files"]["image"]["path"]).name: it["files"]["image"]["reader"] for it in report["items"]}
    assert readers["CTChest4.nrrd"] == "SimpleITKReader(nifti=False)" and readers["anatomical.nii"] == "NibabelReader"


def test_torchrun_gloo_two_processes(tmp_path):
    data = write_volumes(tmp_path / "data", n=4)
    out = tmp_path / "out"
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    multi = [CONFIG, PRETRAIN / "configs" / "multi_gpu_train.json"]
    overrides = ["--dataset_dir", str(data), "--epochs", "1", *TINY_PRETRAIN]
    proc = bundle_run(multi, PRETRAIN, out, *overrides, cwd=tmp_path, launcher=launcher)
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["checkpoint_epoch=1.pt"]
    # both ranks checked the command line; rank 0 alone took the lock and wrote the data report (each rank read
    # half of the files), and no rank waited for the other
    assert proc.stdout.count("command-line overrides: ") == 2
    assert proc.stdout.count(f"output_dir {out.resolve()} locked for this run") == 1
    assert proc.stdout.count("data check | found 4, training on 3, validating on 1, skipped 0") == 1
    assert json.loads((out / "data_report.json").read_text(encoding="utf-8"))["counts"]["training"] == 3
    assert (out / "models" / "model.pt").is_file()
    # rank-0-only handlers: one process wrote TensorBoard events
    pids = {p.name.split(".")[-2] for p in (out / "logs").glob("events.out.tfevents.*")}
    assert len(pids) == 1, pids


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_torchrun_two_nodes_c10d(tmp_path):
    """Two torchrun agents as two "nodes" (one process each) meet through a c10d rendezvous on 127.0.0.1, as on two
    machines sharing ``output_dir``: one epoch together (gloo), rank 0 alone writes, one checkpoint."""
    import subprocess

    data = write_volumes(tmp_path / "data", n=4)
    out = tmp_path / "out"
    endpoint = f"127.0.0.1:{_free_port()}"
    multi = [CONFIG, PRETRAIN / "configs" / "multi_gpu_train.json"]
    overrides = ["--dataset_dir", str(data), "--epochs", "1", *TINY_PRETRAIN]
    procs, logs = [], []
    for node in range(2):
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node_rank={node}",
                    "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                    "--rdzv_id=monai_cover_test", "--max_restarts=0"]
        logs.append(open(tmp_path / f"node{node}.log", "w", encoding="utf-8"))
        procs.append(subprocess.Popen(bundle_args(multi, PRETRAIN, out, *overrides, launcher=launcher),
                                      cwd=str(tmp_path), env=subprocess_env(), stdout=logs[-1],
                                      stderr=subprocess.STDOUT, text=True, encoding="utf-8", errors="replace"))
    try:
        codes = [p.wait(timeout=300) for p in procs]
    finally:
        for p, log in zip(procs, logs):
            if p.poll() is None:
                p.kill()
            log.close()
    text = [(tmp_path / f"node{node}.log").read_text(encoding="utf-8") for node in range(2)]
    assert codes == [0, 0], "\n----\n".join(t[-3000:] for t in text)
    assert [p.name for p in (out / "checkpoints").glob("*.pt")] == ["checkpoint_epoch=1.pt"]
    both = "".join(text)
    assert both.count("command-line overrides: ") == 2  # every node checked its command line
    assert both.count(f"output_dir {out.resolve()} locked for this run") == 1  # rank 0 alone took the lock
    assert both.count("data check | found 4, training on 3, validating on 1, skipped 0") == 1
    assert (out / "models" / "model.pt").is_file()
    pids = {p.name.split(".")[-2] for p in (out / "logs").glob("events.out.tfevents.*")}
    assert len(pids) == 1, pids


def test_verify_metadata_against_shipped_schema(tmp_path):
    from monai.bundle import verify_metadata

    for meta in (META, PRETRAIN.parent / "cover_finetune_3d" / "configs" / "metadata.json"):
        schema = tmp_path / "schema.json"
        shutil.copy(SCHEMA, schema)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            verify_metadata(meta_file=str(meta), filepath=str(schema))  # offline: the file exists, no download
    bad = json.loads(META.read_text(encoding="utf-8"))
    bad.pop("network_data_format")
    (tmp_path / "bad.json").write_text(json.dumps(bad), encoding="utf-8")
    with pytest.raises(Exception):
        verify_metadata(meta_file=str(tmp_path / "bad.json"), filepath=str(schema))


def test_verify_net_in_out_feature_extractor():
    tiny = json.loads(TINY_FEATURES)
    verify_net(
        "feature_extractor",
        META,
        CONFIG,
        features=tiny,
        **{"_meta_#network_data_format#outputs#pred#num_channels": tiny[-1]},
    )
    assert json.loads(META.read_text(encoding="utf-8"))["network_data_format"]["outputs"]["pred"]["format"] == "latent"


def _strings(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k
            yield from _strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from _strings(v)
    elif isinstance(node, str):
        yield node


def test_bundle_files_are_complete():
    finetune = PRETRAIN.parent / "cover_finetune_3d"
    for bundle in (PRETRAIN, finetune):
        for rel in ("LICENSE", "configs/metadata.json", "configs/logging.conf", "configs/train.json", "docs/README.md"):
            assert (bundle / rel).is_file(), f"{bundle.name}/{rel}"
        for cfg in (bundle / "configs").glob("*.json"):
            content = json.loads(cfg.read_text(encoding="utf-8"))
            if cfg.name == "metadata.json":
                continue
            for text in _strings(content):
                # a macro may copy an item of the merged config ("%train#pair_transform"), never read another file
                assert not re.match(r"%[^#]+\.(json|ya?ml)", text), f"{cfg.name}: macro {text!r} reads another file"
            for node in _components(content):
                assert "." in node["_target_"], f"{cfg.name}: _target_ {node['_target_']!r} is not fully qualified"
    for name in ("multi_gpu_train.json", "inference.json", "predict_ddf.json"):
        assert (PRETRAIN / "configs" / name).is_file(), name
    assert (finetune / "configs" / "evaluate.json").is_file()


def _components(node):
    if isinstance(node, dict):
        if "_target_" in node:
            yield node
        for v in node.values():
            yield from _components(v)
    elif isinstance(node, list):
        for v in node:
            yield from _components(v)


def test_predict_ddf_writes_features_and_ddf(pretrain_run):
    import nibabel as nib

    out = pretrain_run["output_dir"]
    configs = [CONFIG, PRETRAIN / "configs" / "predict_ddf.json"]
    proc = bundle_run(configs, PRETRAIN, out, *TINY_PRETRAIN, "--dataset_dir", str(out.parent / "data"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    assert re.search(r"Restored all variables from .*cover_net\.pt", proc.stdout)
    assert "val_ddf_epe" in proc.stdout
    files = sorted(p.name for p in (out / "inference").glob("pair0000_*.nii.gz"))
    assert files == [
        f"pair0000_{k}.nii.gz"
        for k in ("ddf_pred", "ddf_true", "features_a", "features_b", "overlap", "view_a", "view_b")
    ]
    assert nib.load(str(out / "inference" / "pair0000_ddf_pred.nii.gz")).shape == (32, 32, 32, 3)
    assert nib.load(str(out / "inference" / "pair0000_features_a.nii.gz")).shape == (32, 32, 32, 8)


def test_tensorboard_has_learning_rate_and_validation_images(pretrain_run):
    """One event file per run (the writer is shared), the learning rate of every iteration, the validation metrics
    and, at every validation, the pictures of the pair (views, true and predicted DDF, overlap, error)."""
    from monai_cover.handlers import PANELS

    out, epochs = pretrain_run["output_dir"], pretrain_run["resumed_epochs"]
    acc = read_events(out / "logs")
    tags = acc.Tags()
    lr = [e.value for e in acc.Scalars("learning_rate")]
    # 3 volumes, one held out: 2 iterations per epoch; warm-up over epoch 1 then cosine decay, all positive
    assert len(lr) >= 2 * epochs and all(v > 0 for v in lr) and lr[1] > lr[0], lr
    assert {"train_loss", "val_ddf_epe", "val_epe_ratio", "val_nn_correspondence"} <= set(tags["scalars"])
    # the per-level split of the head (LevelEPEHandler): one ratio and one gain share per level, shares summing to 1
    levels = sorted(t for t in tags["scalars"] if t.startswith("level_epe_gain_"))
    assert len(levels) >= 2, tags["scalars"]
    shares = [acc.Scalars(t)[-1].value for t in levels]
    ratio = acc.Scalars(f"level_epe_{len(levels) - 1}")[-1].value
    assert abs(sum(shares) - 1.0) < 1e-3 or ratio >= 1.0, (shares, ratio)
    assert abs(ratio - acc.Scalars("val_epe_ratio")[-1].value) < 1e-3  # the last level's ratio is the head's
    assert {f"val_images/{p}" for p in PANELS} <= set(tags["images"]), tags["images"]
    images = acc.Images("val_images/ddf_pred_magnitude")
    assert sorted({e.step for e in images}) == list(range(1, epochs + 1))  # one per validation (every epoch)
    assert images[-1].width == 32 and images[-1].height == 32  # the middle slice of a 32^3 view


def test_load_pretrained_reads_cover_net_and_checkpoints(pretrain_run):
    """The run's own files load into a plain BasicUNet as they are: ``cover_net.pt`` and a training checkpoint carry
    the CoverNet's ``backbone.`` prefix, which is stripped and reported."""
    from monai_cover.weights import load_pretrained

    out, epochs = pretrain_run["output_dir"], pretrain_run["resumed_epochs"]
    reference = torch.load(out / "models" / "model.pt", weights_only=True)
    for source in (out / "models" / "cover_net.pt", out / "checkpoints" / f"checkpoint_epoch={epochs}.pt"):
        net = _tiny_unet()
        report = load_pretrained(net, source)
        assert report.stripped_prefix == "backbone." and "'backbone.' stripped" in str(report)
        assert len(report.loaded) == len(net.state_dict()) and not report.missing and not report.mismatched
        # keys outside the stripped prefix (the DDF head's) are left out, not reported as unexpected
        assert report.unexpected == [] and len(report.source_shapes) == len(net.state_dict())
        if source.name == "cover_net.pt":  # the final weights: the same as models/model.pt
            assert all(torch.equal(net.state_dict()[k], v) for k, v in reference.items())


def test_standalone_inference_writes_the_feature_extractors_features(pretrain_run, tmp_path):
    """``inference.json`` alone (no ``train.json``): the run's record defines the network (tiny widths, 32^3
    patches); each image's finest-level features (the last width's channels) on its preprocessed 2 mm grid."""
    import nibabel as nib
    import numpy as np

    out = pretrain_run["output_dir"]
    record = json.loads((out / "models" / "model_settings.json").read_text(encoding="utf-8"))
    assert record["features"] == json.loads(TINY_FEATURES) and record["backbone"] == "basic_unet"
    scans = sorted((out.parent / "data").glob("*.nii.gz"))[:1]
    assert scans
    proc = bundle_run([PRETRAIN / "configs" / "inference.json"], PRETRAIN, out, "--infer_input", str(scans[0]))
    assert proc.returncode == 0, proc.stdout[-4000:]
    written = sorted((out / "features").glob("*_features.nii.gz"))
    assert [p.name for p in written] == [scans[0].name.replace(".nii.gz", "_features.nii.gz")]
    features = nib.load(str(written[0]))
    assert features.shape[-1] == json.loads(TINY_FEATURES)[-1]
    np.testing.assert_allclose(np.abs(np.diag(features.affine)[:3]), [2.0, 2.0, 2.0], atol=1e-4)
    values = np.asarray(features.dataobj)
    assert np.isfinite(values).all() and values.std() > 0
    # another width than the record's is refused, naming both
    wrong = bundle_run([PRETRAIN / "configs" / "inference.json"], PRETRAIN, out, "--infer_input", str(scans[0]),
                       "--features", "[8,8,16,16,32,16]")
    assert wrong.returncode != 0 and "features: asked [8, 8, 16, 16, 32, 16], trained with" in wrong.stdout
