# SPDX-License-Identifier: Apache-2.0
"""benchmarks/ssl_benchmark.py: its pieces (profiles and overrides, the bundle's loader chain and the label on its
grid, patch draws, fine-tuning batches, method construction, weight loading) and a CI-sized end-to-end run
(``--smoke``) as a subprocess whose results and report carry the expected fields."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

import numpy as np
import torch

from monai_cover.losses import CoverLoss
from monai_cover.methods import METHODS

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "ssl_benchmark.py"
spec = importlib.util.spec_from_file_location("ssl_benchmark", SCRIPT)
ssl = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ssl)

HAS_DATA = all(importlib.util.find_spec(m) is not None for m in ("nilearn", "slicerio", "SimpleITK", "nibabel"))
HAS_MPL = importlib.util.find_spec("matplotlib") is not None
INITS = ("scratch",) + METHODS
SMOKE = {**ssl.PROFILES["smoke"], "pair_kwargs": {}}


class TestConfig(unittest.TestCase):
    def test_profiles_and_overrides(self):
        args = ssl.parse_args(["--smoke", "--out", "x", "--ks", "1", "2", "--pretrain-steps", "5", "--lr", "0.01",
                               "--cover-levels", "3", "--pretrain-once", "--pair-kwargs", '{"margin": 2.0}'])
        cfg = ssl.make_config(args)
        self.assertEqual((cfg["profile"], cfg["ks"], cfg["pretrain_steps"], cfg["lr"]), ("smoke", [1, 2], 5, 0.01))
        self.assertEqual((cfg["cover_levels"], cfg["pretrain_per_seed"]), (3, False))
        self.assertEqual(cfg["pair_kwargs"], {"margin": 2.0})
        self.assertEqual((cfg["crop"], cfg["spacing"], cfg["ft_steps"]), (32, 3.0, 2))  # from the profile
        self.assertEqual(cfg["methods"], list(METHODS))
        self.assertEqual(ssl.PROFILES["smoke"]["pretrain_steps"], 2)  # the profile itself is untouched
        self.assertEqual(ssl.make_config(ssl.parse_args(["--out", "x"]))["profile"], "quick")
        for name in ssl.PROFILES:
            cfg = ssl.make_config(ssl.parse_args([f"--{name.replace('_', '-')}", "--out", "x", "--methods", "voco"]))
            self.assertEqual((cfg["profile"], cfg["methods"]), (name, ["voco"]))
            self.assertTrue(set(cfg["method_kwargs"]) <= set(METHODS))
        with self.assertRaises(SystemExit):
            ssl.parse_args(["--smoke", "--full", "--out", "x"])

    def test_features_override_widens_the_backbone(self):
        cfg = ssl.make_config(ssl.parse_args(["--smoke", "--out", "x", "--features", "4", "4", "8", "8", "16", "6"]))
        self.assertEqual(cfg["features"], (4, 4, 8, 8, 16, 6))
        self.assertEqual(ssl.make_config(ssl.parse_args(["--medium-3d", "--out", "x"]))["features"],
                         (8, 8, 16, 32, 64, 8))  # unchanged without the option
        net = ssl.build("cover", {**SMOKE, "features": cfg["features"]})[1].network
        with torch.no_grad():
            levels = net.backbone(torch.zeros(1, 1, 32, 32, 32))
        self.assertEqual(levels[-1].shape[1], 6)  # the finest level the probes read has the new width
        for bad in (["4", "4", "8"], ["4", "4", "8", "8", "16", "0"]):
            with self.assertRaisesRegex(ValueError, r"--features: BasicUNet takes 6 positive channel counts"):
                ssl.make_config(ssl.parse_args(["--smoke", "--out", "x", "--features", *bad]))

    def test_medium_suite(self):
        args = ssl.parse_args(["--medium", "--out", "x"])
        self.assertEqual(args.profile, "medium")
        cfgs = {t: ssl.make_config(args, prof) for t, prof in ssl.SUITES["medium"].items()}
        self.assertEqual(sorted(cfgs), ["2d", "3d"])
        for track, cfg in cfgs.items():
            self.assertEqual(cfg["spatial_dims"], int(track[0]))
            self.assertGreaterEqual(len(cfg["pretrain_seeds"]), 3)  # >= 3 pretraining seeds per method
            self.assertGreaterEqual(len(cfg["seeds"]), 5)  # >= 5 fine-tuning seeds
            self.assertGreaterEqual(cfg["probe_seeds"], 10)  # >= 10 probe seeds per pretraining
            self.assertTrue(cfg["propagation"])
            self.assertEqual(cfg["methods"], ["cover", "voxel_infonce"])  # the profile's methods
            self.assertGreater(cfg["curve_points"], 0)
            # fine-tuning seeds 0-4 read pretrainings 0, 1, 2, 0, 1: every pretraining is used
            self.assertEqual([ssl.pretraining_seed(cfg, s) for s in cfg["seeds"]], [0, 1, 2, 0, 1])
            self.assertEqual(ssl.seed_plan(cfg), [(0, 0, True), (1, 1, True), (2, 2, True), (3, 0, False),
                                                  (4, 1, False)])
        # more seeds for a study: new pretrainings, each read first by a fine-tuning seed of another number
        more = ssl.make_config(ssl.parse_args(["--medium-3d", "--out", "x", "--pretrain-seeds", "3", "4", "5",
                                               "--seeds", "5", "6", "7", "8", "9"]))
        self.assertEqual(ssl.seed_plan(more), [(5, 3, True), (6, 4, True), (7, 5, True), (8, 3, False),
                                               (9, 4, False)])
        once = ssl.make_config(ssl.parse_args(["--smoke", "--out", "x", "--seeds", "2", "3", "--pretrain-once"]))
        self.assertEqual(ssl.seed_plan(once), [(2, 2, True), (3, 2, False)])
        self.assertEqual(ssl.crop_shape(cfgs["2d"]), (96, 96))
        self.assertEqual(ssl.patch_shape(cfgs["2d"]), (96, 96, 1))  # one slice of the (1, X, Y, Z) stack
        self.assertEqual(ssl.cover_levels(cfgs["2d"]), 4)  # matched to 96^2, as the pretext study's default
        self.assertEqual(ssl._data.loader_patch(cfgs["2d"]), [96, 96, 1])
        self.assertEqual(ssl.make_config(ssl.parse_args(["--medium", "--out", "x", "--methods", "voco"]),
                                         "medium_2d")["methods"], ["voco"])


class TestData(unittest.TestCase):
    def test_loader_chain_is_the_bundles(self):
        from monai.transforms import LoadImaged, Orientationd, ResampleToMatchd, Spacingd, SpatialPadd

        image_chain, label_chain = ssl.loader_chains({"spacing": 3.0, "crop": 8})
        types = [type(t) for t in image_chain]
        self.assertEqual(types[0], LoadImaged)
        for kind in (Orientationd, Spacingd, SpatialPadd):
            self.assertIn(kind, types)
        spacing = image_chain[types.index(Spacingd)]
        self.assertEqual(tuple(spacing.spacing_transform.pixdim), (3.0, 3.0, 3.0))
        pad = image_chain[types.index(SpatialPadd)]
        self.assertEqual(list(pad.padder.spatial_size), [12, 12, 12])  # the bundle's ceil(margin 1.5 * patch)
        wider = ssl.loader_chains({"spacing": 3.0, "crop": 8, "pair_kwargs": {"margin": 2.0}})[0]
        self.assertEqual(list(wider[types.index(SpatialPadd)].padder.spatial_size), [16, 16, 16])
        self.assertEqual(tuple(label_chain[0].keys), ("label",))
        self.assertIs(label_chain[0]._loader, image_chain[0]._loader)  # the same readers
        self.assertIsInstance(label_chain[1], ResampleToMatchd)

    def _volumes(self, tmp: str, flip: bool) -> dict:
        import nibabel as nib

        rng = np.random.default_rng(0)
        shape = (20, 24, 16)
        label = np.zeros(shape, np.uint8)
        label[3:12, 4:20, 2:10], label[12:18, 4:20, 2:10], label[5:9, 6:9, 11:14] = 1, 2, 3
        affine = np.diag([-2.0 if flip else 2.0, 2.0, 2.0, 1.0])
        affine[:3, 3] = [30.0 if flip else -10.0, -20.0, 5.0]
        nib.save(nib.Nifti1Image(rng.normal(100, 20, shape).astype(np.float32), affine), f"{tmp}/i.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), f"{tmp}/l.nii.gz")
        return {"image": f"{tmp}/i.nii.gz", "label": f"{tmp}/l.nii.gz", "modality": "MR"}

    def test_label_follows_the_image_grid(self):
        from monai.transforms import Compose, LoadImaged, Orientationd, Spacingd, SpatialPadd

        keys = ["image", "label"]
        reference = Compose([LoadImaged(keys, image_only=True, ensure_channel_first=True), Orientationd(keys, "RAS"),
                             Spacingd(keys, pixdim=(3.0,) * 3, mode=["bilinear", "nearest"]), SpatialPadd(keys, 12)])
        image_chain, label_chain = ssl.loader_chains({"spacing": 3.0, "crop": 8})
        for flip in (False, True):
            with tempfile.TemporaryDirectory() as tmp:
                data = self._volumes(tmp, flip)
                out, ref = Compose(image_chain + label_chain)(dict(data)), reference(dict(data))
            self.assertEqual(tuple(out["label"].shape), (1, 14, 16, 12))  # 16 * 2 / 3 = 11 -> padded to 12
            self.assertEqual(out["label"].shape, out["image"].shape)
            torch.testing.assert_close(out["label"].affine, out["image"].affine)
            torch.testing.assert_close(out["image"].affine, ref["image"].affine)
            self.assertEqual(torch.unique(out["label"]).tolist(), [0.0, 1.0, 2.0, 3.0])  # nearest: no new values
            self.assertLessEqual(float(out["image"].max()), 1.0)  # the bundle's intensity scaling
            agree = (out["label"].as_tensor() == ref["label"].as_tensor()).float().mean()
            # RAS input (as the MNI template): exactly Orientationd + Spacingd(nearest) + SpatialPadd; a flipped axis
            # resampled in one step may break the ties half-way between two source voxels the other way
            self.assertEqual(float(agree), 1.0) if not flip else self.assertGreater(float(agree), 0.95)

    def test_draw_patches(self):
        label = torch.zeros(1, 24, 20, 16, dtype=torch.int64)
        label[:, 4:20, 2:18, 2:14] = 2
        boxes = ssl.draw_patches(label, 8, 5, seed=3)
        self.assertEqual(len(boxes), 5)
        self.assertEqual(ssl.draw_patches(label, 8, 2, seed=3), boxes[:2])  # nested: k=2 is in k=5
        self.assertNotEqual(ssl.draw_patches(label, 8, 5, seed=4), boxes)
        for o in boxes:
            self.assertTrue(all(0 <= a <= s - 8 for a, s in zip(o, label.shape[1:])))
            window = label[0, o[0]:o[0] + 8, o[1]:o[1] + 8, o[2]:o[2] + 8]
            self.assertGreaterEqual(float((window > 0).float().mean()), 0.3)
        with self.assertRaisesRegex(RuntimeError, "could not draw 1 patches with >= 30% foreground"):
            ssl.draw_patches(torch.zeros(1, 8, 8, 8, dtype=torch.int64), 4, 1, seed=0)

    def test_draw_patches_one_slice(self):
        label = torch.zeros(1, 20, 20, 6, dtype=torch.int64)
        label[:, 2:18, 2:18, 3] = 1  # only slice 3 has foreground
        boxes = ssl.draw_patches(label, (8, 8, 1), 4, seed=0)
        self.assertEqual({o[2] for o in boxes}, {3})
        for o in boxes:
            self.assertGreaterEqual(float((label[0, o[0]:o[0] + 8, o[1]:o[1] + 8, o[2]] > 0).float().mean()), 0.3)

    def test_foreground_slices(self):
        vol = torch.zeros(1, 6, 8, 5)
        vol[0, :, :, 1] = 1.0  # 48 pixels
        vol[0, :2, :, 3] = 1.0  # 16 pixels
        vol[0, 0, 0, 4] = 0.05  # below the 0.1 threshold
        self.assertEqual(ssl._data.foreground_slices(vol, 2, min_pixels=10), [1, 3])
        self.assertEqual(ssl._data.foreground_slices(vol, 2, min_pixels=20), [1])
        self.assertEqual(ssl._data.foreground_slices(vol, 0, min_pixels=9), [0, 1])  # sagittal: rows 0, 1 have 10

    def test_slice_pool_and_task(self):
        cfg = {"slice_axis": 2, "crop": 8, "spacing": 2.0, "min_slice_fg": 0.25}
        image = torch.zeros(1, 12, 12, 20)
        label = torch.zeros(1, 12, 12, 20, dtype=torch.int64)
        image[0, 2:10, 2:10, 2:18], label[0, 2:10, 2:10, 2:18] = 0.8, 1  # labelled slices 2..17
        other = torch.zeros(1, 16, 16, 4)
        other[0, :, :, 1:3] = 0.5
        small = torch.ones(1, 6, 6, 9)  # in-plane smaller than the crop: no 2D image
        pool, task = ssl._data.slice_pool_and_task([("mni152_t1", image), ("ct", other), ("small", small)], image,
                                                   label, cfg)
        split = task["split"]
        self.assertEqual((split["train"], split["eval"]), ([2, 8], [12, 18]))  # mid 10, gap round(4 / 2) = 2
        self.assertEqual(tuple(task["train_image"].shape), (1, 12, 12, 6))
        self.assertEqual(tuple(task["eval_label"].shape), (1, 12, 12, 6))
        self.assertTrue(torch.equal(task["eval_label"], label[..., 12:18]))
        names = [n for n, _ in pool]
        # MNI: slices with >= 16 foreground pixels, but none from 10 on (the evaluation slices and their gap)
        self.assertEqual(names, [f"mni152_t1[{z}]" for z in range(2, 10)] + ["ct[1]", "ct[2]"])
        self.assertTrue(all(tuple(x.shape) in ((1, 12, 12), (1, 16, 16)) for _, x in pool))
        torch.testing.assert_close(pool[-1][1], other[..., 2])
        with self.assertRaisesRegex(RuntimeError, r"no slice along axis 2 has 25% of a 8\^2 crop"):
            ssl._data.slice_pool_and_task([("ct", torch.zeros(1, 16, 16, 4))], image, label, cfg)
        with self.assertRaisesRegex(RuntimeError, r"mni152_t1 slices \(12, 12\) are smaller than the crop 16"):
            ssl._data.slice_pool_and_task(pool, image, label, {**cfg, "crop": 16})

    def test_patch_batches(self):
        images = torch.arange(3.0).view(3, 1, 1, 1, 1).expand(3, 1, 4, 4, 4).contiguous() + 1.0
        labels = torch.arange(3).view(3, 1, 1, 1, 1).expand(3, 1, 4, 4, 4).contiguous()
        batches = ssl.patch_batches(images, labels, batch=2, seed=1)
        first = [next(batches) for _ in range(3)]
        again = ssl.patch_batches(images, labels, batch=2, seed=1)
        for b in first:  # the same batches for every initialisation at one seed
            c = next(again)
            self.assertTrue(torch.equal(b["image"], c["image"]) and torch.equal(b["label"], c["label"]))
        other = next(ssl.patch_batches(images, labels, batch=2, seed=2))
        self.assertFalse(torch.equal(other["image"], first[0]["image"]))
        for b in first:
            self.assertEqual((tuple(b["image"].shape), tuple(b["label"].shape)), ((2, 1, 4, 4, 4), (2, 1, 4, 4, 4)))
            source = images[b["label"][:, 0, 0, 0, 0]]  # patch i holds i + 1 everywhere and label i
            jitter = (b["image"] - source).abs().amax(dim=(1, 2, 3, 4))  # scale 1 +- 0.1, shift +- 0.05
            self.assertTrue(bool((jitter <= 0.1 * source.amax(dim=(1, 2, 3, 4)) + 0.05 + 1e-6).all()))
            self.assertEqual(b["image"].std(dim=(1, 2, 3, 4)).max().item(), 0.0)  # one scale and shift per patch


class TestMethodsAndWeights(unittest.TestCase):
    def test_build_every_method(self):
        from monai_cover.baselines.pcrlv2 import PCRLv2Cropd
        from monai_cover.transforms import RandCoverPaird

        methods = {}
        for name in METHODS:
            unet, m = ssl.build(name, SMOKE)
            methods[name] = m
            self.assertEqual(m.name, name)
            self.assertIs(m.network.backbone.network, unet)  # the BasicUNet whose state_dict is kept
            trained = {id(p) for p in m.parameters()}
            self.assertTrue(all(id(p) in trained for p in unet.parameters()))
        self.assertIsInstance(methods["cover"].transform, RandCoverPaird)
        self.assertIsInstance(methods["voxel_infonce"].transform, RandCoverPaird)
        self.assertIsInstance(methods["pcrlv2"].transform, PCRLv2Cropd)
        self.assertEqual(methods["voxel_infonce"].loss.num_samples, 64)  # smoke's method_kwargs
        self.assertEqual(methods["voxel_infonce"].prepare_batch.input_keys, ["view_a", "view_b"])
        self.assertEqual(methods["voco"].prepare_batch.target_keys, ["voco_labels"])
        _, cover3 = ssl.build("cover", {**SMOKE, "cover_levels": 3})
        self.assertEqual(len(cover3.network.backbone.layers), 3)
        full = methods["cover"].network.backbone  # --cover-levels 3 = the 3 finest layers, same padding rule
        self.assertEqual(cover3.network.backbone.layers, full.layers[-3:])
        self.assertEqual(cover3.network.backbone.size_divisible, full.size_divisible)
        self.assertEqual(len(ssl.build("voco", {**SMOKE, "cover_levels": 3})[1].network.backbone.layers), 5)

    def test_every_variant_trains_its_own_term(self):
        """Each COVER variant, through its own transform, batch preparation, network and loss, computes the terms it
        adds and not the spread term it drops (the teacher-forced heads need the true field passed to them), and its
        gradient reaches the BasicUNet's finest block."""
        from monai.data import list_data_collate

        own_terms = {"cover_hybrid": ("infonce",), "cover_deep_sup": ("levels",), "cover_projector": ("consistency",),
                     "cover_teacher_forced": ("residual",), "cover_deep_sup_teacher_forced": ("levels", "residual"),
                     "cover_paper": (), "cover_teacher_forced_offsets": ("residual",),
                     "cover_teacher_forced_wide": ("residual",), "cover_teacher_forced_radius3": ("residual",),
                     "cover_teacher_forced_infonce": ("residual", "infonce"),
                     "cover_teacher_forced_heads4": ("residual",)}
        self.assertEqual(set(own_terms), set(ssl.VARIANTS))
        image = torch.rand(1, 40, 40, 40, generator=torch.Generator().manual_seed(0))
        for name, own in own_terms.items():
            torch.manual_seed(0)
            unet, m = ssl.build(name, SMOKE)
            m.transform.set_random_state(seed=0)
            batch = list_data_collate([m.transform({"image": image.clone()}) for _ in range(2)])
            inputs, targets, args, kwargs = m.prepare_batch(batch)
            self.assertEqual("ddf" in kwargs, "residual" in own, name)
            pred = m.network(inputs, *args, **kwargs)  # as SupervisedTrainer calls it
            terms = m.loss.terms(pred, targets)
            if name == "cover_projector":  # L_con reads the projected features, (B, 32, *S)
                self.assertEqual(tuple(pred["projected_a"].shape), (2, 32, 32, 32, 32))
            if name == "cover_teacher_forced_radius3":  # a 7x7x7 neighbourhood; the views keep the radius-2 bound
                self.assertEqual(m.network.head.radius, 3)
                bound = ssl.pair_kwargs(SMOKE, ssl.cover_levels(SMOKE))["max_displacement"]
                self.assertEqual(m.transform.pair.max_displacement, bound)
            if name == "cover_teacher_forced_heads4":  # the finest level reads 4 x 8 channels, not 1 x 8
                self.assertEqual(set(m.network.head.num_heads), {4})
                self.assertEqual(m.network.head.projections[-1].out_channels, 32)
            if name == "cover_teacher_forced_offsets":  # the fine levels' attention over 125 offsets, (B, 1, 125, *S)
                self.assertEqual(tuple(pred["residuals"][-1].shape), (2, 1, 125, 32, 32, 32))
            self.assertTrue(set(own) <= set(terms), (name, sorted(terms)))
            self.assertEqual("spread" in terms, name not in ("cover_hybrid", "cover_paper"), name)
            self.assertTrue(all(torch.isfinite(v).all() for v in terms.values()), (name, terms))
            m.loss(pred, targets).backward()
            finest = unet.upcat_1.parameters()
            self.assertGreater(sum(p.grad.abs().sum().item() for p in finest if p.grad is not None), 0.0, name)
            trained = {id(p) for p in m.parameters()}
            self.assertTrue(all(id(p) in trained for p in m.network.parameters()), name)

    def test_init_segmenter_loads_all_but_final_conv(self):
        torch.manual_seed(123)
        state = ssl.make_unet(SMOKE).state_dict()
        net, scratch = ssl.init_segmenter(SMOKE, state, seed=0), ssl.init_segmenter(SMOKE, None, seed=0)
        again = ssl.init_segmenter(SMOKE, None, seed=0)
        for key, value in net.state_dict().items():
            expected = scratch.state_dict()[key] if key.startswith("final_conv.") else state[key]
            torch.testing.assert_close(value, expected, msg=key)
            torch.testing.assert_close(scratch.state_dict()[key], again.state_dict()[key])  # seeded
        self.assertFalse(torch.equal(net.state_dict()["conv_0.conv_0.conv.weight"],
                                     scratch.state_dict()["conv_0.conv_0.conv.weight"]))
        missing = {k: v for k, v in state.items() if not k.startswith("down_4.")}
        with self.assertRaisesRegex(RuntimeError, r"do not fit the segmentation BasicUNet.*missing \['down_4\."):
            ssl.init_segmenter(SMOKE, missing, seed=0)
        reshaped = {**state, "down_4.convs.conv_1.conv.weight": torch.zeros(1, 1, 3, 3, 3)}
        with self.assertRaisesRegex(RuntimeError, r"mismatched \{'down_4\.convs\.conv_1\.conv\.weight'"):
            ssl.init_segmenter(SMOKE, reshaped, seed=0)
        with self.assertRaisesRegex(RuntimeError, r"unexpected \['extra'\]"):
            ssl.init_segmenter(SMOKE, {**state, "extra": torch.zeros(1)}, seed=0)


@unittest.skipUnless(HAS_DATA, "needs nilearn, slicerio, SimpleITK and nibabel for the real volumes")
class TestSSLBenchmarkSmoke(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.out = Path(cls.tmp.name) / "run"
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        start = time.time()
        cls.proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke-suite", "--out", str(cls.out), "--quiet"],
                                  cwd=str(ROOT), env=env, capture_output=True, text=True, timeout=600,
                                      encoding="utf-8", errors="replace")
        cls.seconds = time.time() - start
        cls.results, cls.results_2d = None, None
        if cls.proc.returncode == 0 and (cls.out / "3d" / "results.json").exists():
            cls.results = json.loads((cls.out / "3d" / "results.json").read_text(encoding="utf-8"))
            cls.results_2d = json.loads((cls.out / "2d" / "results.json").read_text(encoding="utf-8"))

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def _results(self) -> dict:
        self.assertEqual(self.proc.returncode, 0, msg=f"stdout:\n{self.proc.stdout[-3000:]}\nstderr:\n"
                                                      f"{self.proc.stderr[-3000:]}")
        self.assertIsNotNone(self.results)
        return self.results

    def test_runs_in_ci_budget(self):
        self._results()
        # the two smoke tracks take ~40-90 s on a loaded 2-core CPU; leave slack for a busy CI machine
        self.assertLess(self.seconds, 300)

    def test_data_through_the_bundle_loader(self):
        r = self._results()
        self.assertEqual(r["data"]["loader"], "bundles/cover_pretrain_3d/configs/train.json#loader_transforms")
        self.assertEqual(sorted(r["data"]["pool"]), ["chest_ct", "mni152_t1", "nibabel_anatomical_t1",
                                                     "nibabel_epi_frame0"])
        for name, vol in r["data"]["volumes"].items():
            self.assertTrue(all(s >= 48 for s in vol["shape"]), msg=f"{name} {vol['shape']}")  # crop_size 1.5 * 32
        split = r["data"]["split"]
        self.assertEqual(split["axis"], 0)
        self.assertEqual(split["shape"], r["data"]["volumes"]["mni152_t1"]["shape"])
        self.assertEqual(split["train"], [0, split["shape"][0] // 2 - 1])  # gap round(4 mm / 3 mm) = 1 voxel
        self.assertEqual(split["eval"], [split["shape"][0] // 2 + 1, split["shape"][0]])

    def test_every_method_end_to_end(self):
        r = self._results()
        cfg = r["config"]
        self.assertEqual(cfg["profile"], "smoke")
        self.assertEqual(cfg["method_kwargs"]["pcrlv2"], {"transform_kwargs": {"num_local": 1}})
        self.assertEqual(sorted(r["pretrain"]), sorted(METHODS))
        for method in METHODS:
            for run in r["pretrain"][method].values():
                self.assertEqual(len(run["losses"]), cfg["pretrain_steps"])
                self.assertTrue(all(math.isfinite(v) for v in run["losses"]))
                self.assertGreater(run["seconds"], 0)
        terms, weights = r["pretrain"]["cover"]["0"]["terms"], CoverLoss()  # the library's default COVER objective
        self.assertTrue({"vector", "consistency", "zero_ddf_l1"} <= set(terms))
        for i, loss in enumerate(r["pretrain"]["cover"]["0"]["losses"]):  # the logged terms are the loss's own
            self.assertAlmostEqual(loss, sum(getattr(weights, f"{k}_weight") * v[i] for k, v in terms.items()
                                             if k != "zero_ddf_l1"), places=4)
        runs = r["runs"]
        self.assertEqual(len(runs), len(INITS) * len(cfg["ks"]) * len(cfg["seeds"]))
        for run in runs:
            self.assertIn(run["init"], INITS)
            self.assertEqual(sorted(run["dice"]), sorted(["other", "grey matter", "white matter"]))
            for v in run["dice"].values():
                self.assertGreaterEqual(v, 0.0)
                self.assertLessEqual(v, 1.0)
            self.assertAlmostEqual(run["dice_mean"], sum(run["dice"].values()) / 3, places=6)
            self.assertEqual(len(run["patches"]), run["k"])
            self.assertEqual(run["pretrain_seed"], ssl.pretraining_seed(cfg, run["seed"]))  # what it read
            self.assertTrue(math.isfinite(run["final_train_loss"]))
        # identical labelled patches for every initialisation at a given seed and k
        for k in cfg["ks"]:
            patches = {json.dumps(run["patches"]) for run in runs if run["k"] == k and run["seed"] == cfg["seeds"][0]}
            self.assertEqual(len(patches), 1)

    def test_label_propagation_records(self):
        for r, columns in ((self._results(), {"mirror"}), (self.results_2d, {1, 2})):
            recs = r["propagation"]
            self.assertEqual(sorted(recs), sorted(INITS))
            for init, rows in recs.items():
                routes = {"identity", "features", "field"} if init == "cover" else {"identity", "features"}
                self.assertEqual({x["route"] for x in rows}, routes)
                self.assertEqual({x["distance"] for x in rows}, columns)
                for x in rows:
                    self.assertEqual(len(x["dice"]), 3)
                    self.assertAlmostEqual(x["dice_mean"], float(np.mean(x["dice"])), places=6)
                    self.assertTrue(all(0.0 <= v <= 1.0 for v in x["dice"]))
            self.assertIn("## Label propagation", (self.out / ("3d" if columns == {"mirror"} else "2d") /
                                                   "report.md").read_text(encoding="utf-8"))

    def test_summary_and_diagnostics_fields(self):
        r = self._results()
        for init in INITS:
            for k in r["config"]["ks"]:
                s = r["summary"][init][str(k)]
                for key in ("mean", "std", "n", "seeds", "per_class"):
                    self.assertIn(key, s)
            self.assertIn(init, r["diagnostics"])
            for diag in r["diagnostics"][init].values():
                for key in ("intra_cosine", "inter_cosine", "ratio", "gap", "effective_rank", "max_rank"):
                    self.assertIn(key, diag)
                self.assertGreaterEqual(diag["effective_rank"], 0.0)
        self.assertEqual(sorted(r["comparisons"]), sorted(set(INITS) - {"cover"}))
        for key in ("data_seconds", "pretrain_seconds", "finetune_seconds", "total_seconds"):
            self.assertIn(key, r["timings"])

    def test_report_files(self):
        self._results()
        report = (self.out / "3d" / "report.md").read_text(encoding="utf-8")
        for text in ("Mean Dice", "| init |", "Over-dispersion", "intra cos", "eff. rank", "Limitations", "k=1",
                     "SupervisedTrainer", "loader_transforms"):
            self.assertIn(text, report)
        for init in INITS:
            self.assertIn(f"| {init} |", report)
        if HAS_MPL:
            for name in ("dice_vs_k.png", "pretrain_loss.png"):
                path = self.out / "3d" / name
                self.assertTrue(path.exists(), name)
                self.assertEqual(path.read_bytes()[:8], b"\x89PNG\r\n\x1a\n")
            self.assertEqual(sorted(self.results["plots"]), ["dice_vs_k.png", "pretext_curves.png",
                                                             "pretrain_loss.png"])


    def test_pretext_curves(self):
        for results in (self._results(), self.results_2d):
            cfg = results["config"]
            for method, per_seed in results["pretrain"].items():
                curve = per_seed["0"]["curve"]
                self.assertEqual([c["step"] for c in curve], [0, cfg["pretrain_steps"]])  # smoke: 1 point after 0
                for c in curve:
                    self.assertEqual("epe_ratio" in c, method == "cover")  # only COVER predicts a field
                    self.assertTrue(0.0 <= c["nn_corr"] <= 1.0)
                    self.assertTrue(1.0 <= c["rank"] <= cfg["features"][-1] + 1e-6)
                    if method == "cover":
                        self.assertTrue(0.0 < c["epe_ratio"] < 3.0)
            # every method starts from the same seeded network on the same held-out pairs
            firsts = {m: {k: v for k, v in r["0"]["curve"][0].items() if k != "epe_ratio"}
                      for m, r in results["pretrain"].items()}
            self.assertEqual(len({json.dumps(v, sort_keys=True) for v in firsts.values()}), 1, msg=firsts)

    def test_2d_track(self):
        self._results()
        r = self.results_2d
        cfg, data = r["config"], r["data"]
        self.assertEqual((cfg["profile"], cfg["spatial_dims"]), ("smoke_2d", 2))
        self.assertEqual(sorted(r["pretrain"]), sorted(METHODS))  # every method runs in 2D
        split = data["split"]
        self.assertEqual(split["axis"], 2)
        self.assertLess(split["train"][1], split["eval"][0])  # slices of different positions
        self.assertGreater(data["pool_images"], 20)
        self.assertIn("held out of pretraining", data["curve_pairs"])
        self.assertEqual(len(r["runs"]), len(INITS) * len(cfg["ks"]) * len(cfg["seeds"]))
        for run in r["runs"]:
            self.assertEqual(len(run["patches"][0]), 3)  # (x, y, slice)
            self.assertTrue(split["train"][0] <= run["patches"][0][2] + split["train"][0] < split["train"][1])
            self.assertAlmostEqual(run["dice_mean"], sum(run["dice"].values()) / 3, places=6)
            self.assertTrue(all(0.0 <= v <= 1.0 for v in run["dice"].values()))
        text = (self.out / "2d" / "report.md").read_text(encoding="utf-8")
        self.assertIn("benchmark (2D)", text)
        self.assertIn("held-out slices (upper half of the brain)", text)
        self.assertIn("split by slice position", text)

    def test_suite_report(self):
        self._results()
        text = (self.out / "report.md").read_text(encoding="utf-8")
        for track in ("2d", "3d"):
            self.assertIn(f"## Track {track}", text)
            self.assertIn(f"({track}/report.md)", text)
        comp = self.results["comparisons"]["scratch"]["1"]
        self.assertIn(f"| scratch | {comp['mean']:+.4f} [{comp['ci_low']:+.4f}, {comp['ci_high']:+.4f}] "
                      f"({comp['wins']}/{comp['n']}) |", text)
        self.assertIn("| COVER minus | k=1 |", text)
        self.assertIn("epe_ratio (start -> end)", text)


if __name__ == "__main__":
    unittest.main()
