#!/usr/bin/env python
# SPDX-License-Identifier: Apache-2.0
"""Gather the real medical volumes that package registries ship, as NIfTI plus a MONAI datalist.

Run once at set-up (never imported by the package)::

    python benchmarks/data/fetch_real_data.py --out data/real            # everything it can get
    python benchmarks/data/fetch_real_data.py --out data/real --sources nilearn slicerio nibabel  # wheels only

Sources (see docs: shared data notes; each is skipped with a printed reason when unavailable):

===============  ==================================================  ===========================================
source           where it comes from                                  what is written
===============  ==================================================  ===========================================
``nilearn``      nilearn wheel (BSD): ICBM152 2009a template, GM/WM   ``mni152_t1`` (MR T1, labelled: 1 other
                 probability maps and brain mask                       tissue in the mask, 2 GM > 0.5, 3 WM > 0.5)
``slicerio``     slicerio wheel (MIT): ``CTChest4.nrrd`` and            ``chest_ct`` (CT in HU, labelled: 7 classes
                 ``Segmentation.seg.nrrd``                             ribs, spine x3, lungs x2, tissue)
``nibabel``      nibabel wheel (MIT) test data                         ``nibabel_anatomical_t1`` (tiny T1),
                                                                       ``nibabel_epi_frame0`` (fMRI frame)
``pycortex``     ``pip download --no-deps pycortex==1.4.0`` (sdist,    ``pycortex_s1_t1`` (individual T1, 256³ at
                 BSD-2, ~70 MB); only ``raw.nii.gz`` is extracted,    1 mm, unlabelled)
                 nothing is built or installed
``itk``          Debian ``insighttoolkit5-examples`` (Apache-2.0)      ``itk_kmeans_t1`` (T1 slab, labelled: 0
                 via ``apt-get download`` + ``dpkg-deb -x`` (no        background, 1-5 K-means classes, algorithmic)
                 install), or the installed package
``invesalius``   Debian ``invesalius-examples`` (GPL-2) likewise;      ``invesalius_head_ct`` (head CT in HU,
                 ``Cranium.inv3`` is unpacked in Python               labelled: 1 soft tissue, 2 bone, from the
                                                                       file's two threshold masks)
===============  ==================================================  ===========================================

Output in ``--out``: ``images/<name>.nii.gz``, ``labels/<name>.nii.gz``, ``datalist.json`` (MONAI/Decathlon
format, paths relative to it: ``training`` = the pretraining pool, ``validation`` = one held-out volume,
``labelled`` = the volumes with voxel labels, plus ``label_names`` and ``sources``) and
``fetch_summary.json``. A summary table (name, modality, shape, spacing, labels, size, licence) is printed.
Licences differ per source (invesalius-examples is GPL-2): keep the files out of redistributed wheels.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import plistlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

if importlib.util.find_spec("monai_cover") is None:  # run from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

ALL_SOURCES = ("nilearn", "slicerio", "nibabel", "pycortex", "itk", "invesalius")
ITK_DATA = "usr/share/doc/insighttoolkit5-examples/examples/Data"
INVESALIUS_FILE = "usr/share/doc/invesalius-examples/examples/Cranium.inv3"


class SkipSource(RuntimeError):
    """A source that cannot be fetched here (missing package, no apt, no network): reported, not fatal."""


# --------------------------------------------------------------------------------------------- writing
def _save(array: np.ndarray, affine: np.ndarray, path: Path, dtype) -> None:
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype), np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    tmp = path.with_name(f".{os.getpid()}.{path.name}")
    nib.save(img, str(tmp))
    os.replace(tmp, path)


def _record(out: Path, name: str, modality: str, source: str, licence: str, image: np.ndarray, affine: np.ndarray,
            label: np.ndarray | None = None, label_names: dict | None = None, image_dtype=np.float32) -> dict:
    """Write one volume (and its label map) and return its summary record."""
    _save(image, affine, out / "images" / f"{name}.nii.gz", image_dtype)
    rec = {"name": name, "modality": modality, "source": source, "licence": licence,
           "image": f"images/{name}.nii.gz", "shape": [int(s) for s in image.shape],
           "spacing": [round(float(s), 4) for s in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(0))]}
    if label is not None:
        _save(label, affine, out / "labels" / f"{name}.nii.gz", np.uint8)
        rec["label"] = f"labels/{name}.nii.gz"
        rec["label_values"] = [int(v) for v in np.unique(label)]
        rec["label_names"] = {int(k): v for k, v in (label_names or {}).items()}
    rec["bytes"] = sum((out / rec[k]).stat().st_size for k in ("image", "label") if k in rec)
    return rec


def _require(module: str, hint: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise SkipSource(f"python package {module!r} not installed ({hint})")


# --------------------------------------------------------------------------------------------- sources
# nilearn, slicerio and nibabel are the library's own demo volumes (monai_cover.data.demo), read the same way here
def fetch_nilearn(out: Path, tmp: Path, resolution: int = 1) -> list[dict]:
    _require("nilearn", "pip install nilearn")
    from monai_cover.data.demo import mni152_t1, mni152_tissue_labels

    label, names = mni152_tissue_labels(resolution)
    return [_record(out, "mni152_t1", "MR", "nilearn ICBM152 2009a template", "BSD-3 (nilearn) / ICBM terms",
                    *mni152_t1(resolution), label, names)]


def fetch_slicerio(out: Path, tmp: Path) -> list[dict]:
    _require("slicerio", "pip install slicerio")
    _require("SimpleITK", "pip install SimpleITK")
    from monai_cover.data.demo import chest_ct_label_names, demo_segmentation_datalist, read_volume

    item = demo_segmentation_datalist()["training"][0]
    image, affine = read_volume(item["image"])
    label, label_affine = read_volume(item["label"])
    if label.shape != image.shape or not np.allclose(label_affine, affine, atol=1e-4):
        raise RuntimeError(f"slicerio's segmentation {label.shape} is not on the CT's grid {image.shape}.")
    return [_record(out, "chest_ct", "CT", "slicerio data/CTChest4.nrrd + Segmentation.seg.nrrd", "MIT",
                    image, affine, label, chest_ct_label_names())]


def fetch_nibabel(out: Path, tmp: Path) -> list[dict]:
    from monai_cover.data.demo import demo_volume

    return [
        _record(out, "nibabel_anatomical_t1", "MR", "nibabel tests/data/anatomical.nii", "MIT",
                *demo_volume("anatomical_t1")),
        _record(out, "nibabel_epi_frame0", "MR", "nibabel tests/data/example4d.nii.gz (frame 0)", "MIT",
                *demo_volume("epi_example4d")),
    ]


def fetch_pycortex(out: Path, tmp: Path) -> list[dict]:
    import nibabel as nib

    dest = tmp / "pycortex"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "pycortex==1.4.0",
           "-d", str(dest)]
    print("  running:", " ".join(cmd), flush=True)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SkipSource(f"pip download failed: {exc}") from exc
    sdists = sorted(dest.glob("pycortex-1.4.0*.tar.gz"))
    if proc.returncode != 0 or not sdists:
        raise SkipSource(f"pip download pycortex==1.4.0 failed (rc {proc.returncode}): {proc.stderr.strip()[-300:]}")
    with tarfile.open(sdists[0]) as tar:
        members = [m for m in tar.getmembers() if m.name.endswith("filestore/db/S1/anatomicals/raw.nii.gz")]
        if not members:
            raise SkipSource("the pycortex sdist holds no filestore/db/S1/anatomicals/raw.nii.gz")
        raw = tmp / "pycortex_raw.nii.gz"
        with tar.extractfile(members[0]) as src, open(raw, "wb") as dst:
            shutil.copyfileobj(src, dst)
    img = nib.load(str(raw))
    return [_record(out, "pycortex_s1_t1", "MR", "pycortex 1.4.0 sdist filestore/db/S1/anatomicals/raw.nii.gz",
                    "BSD-2", np.asarray(img.dataobj, dtype=np.float32), img.affine)]


def _debian_file(package: str, relative: str, tmp: Path) -> Path:
    """``/<relative>`` if ``package`` is installed, else fetched with ``apt-get download`` and unpacked."""
    installed = Path("/") / relative
    if installed.exists():
        return installed
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        raise SkipSource("apt-get/dpkg-deb not available (not a Debian/Ubuntu system)")
    work = tmp / package
    work.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["apt-get", "download", package], cwd=work, capture_output=True, text=True, timeout=600,
                              encoding="utf-8", errors="replace")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SkipSource(f"apt-get download {package} failed: {exc}") from exc
    debs = sorted(work.glob(f"{package}_*.deb"))
    if proc.returncode != 0 or not debs:
        raise SkipSource(f"apt-get download {package} failed (rc {proc.returncode}; try `apt-get update`): "
                         f"{proc.stderr.strip()[-300:]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(work / "root")], check=True, capture_output=True)
    found = work / "root" / relative
    if not found.exists():
        raise SkipSource(f"{package} does not contain /{relative}")
    return found


def fetch_itk(out: Path, tmp: Path) -> list[dict]:
    import nibabel as nib

    data = _debian_file("insighttoolkit5-examples", f"{ITK_DATA}/KmeansTest_T1UCharRaw.nii.gz", tmp).parent
    img = nib.load(str(data / "KmeansTest_T1UCharRaw.nii.gz"))
    seg = nib.load(str(data / "KmeansTest_T1KmeansPrelimSegmentation.nii.gz"))
    # the file's class 1 is the dark background (class 0 holds ~100 stray voxels): shift so background is 0
    label = np.clip(np.asarray(seg.dataobj, dtype=np.int16) - 1, 0, None).astype(np.uint8)
    names = {0: "background (k-means class 1, and 0)", **{i: f"k-means class {i + 1}" for i in range(1, 6)}}
    return [_record(out, "itk_kmeans_t1", "MR", "Debian insighttoolkit5-examples KmeansTest_T1*", "Apache-2.0",
                    np.asarray(img.dataobj, dtype=np.float32), img.affine, label, names)]


def read_inv3(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[np.ndarray], dict]:
    """Read an InVesalius 3 project (a tar.gz): ``(volume [x, y, z] int16, affine, masks [x, y, z] bool, main)``.

    ``matrix.dat`` is raw ``dtype``/``shape`` from ``main.plist`` (shape ``(z, y, x)``); each ``mask_*.dat``
    is uint8 of shape ``mask_shape`` = shape + 1 on every axis (a leading border row of flags, dropped),
    inside where > 127. The affine is diagonal with ``spacing`` (orientation not encoded in the file).
    """
    with tarfile.open(path) as tar:
        files = {Path(m.name).name: m for m in tar.getmembers() if m.isfile()}

        def read(name: str) -> bytes:
            with tar.extractfile(files[name]) as f:
                return f.read()

        main = plistlib.loads(read("main.plist"))
        shape = tuple(int(s) for s in main["matrix"]["shape"])
        volume = np.frombuffer(read(main["matrix"]["filename"]), dtype=main["matrix"]["dtype"]).reshape(shape)
        masks = []
        for key in sorted(main.get("masks", {}), key=int):
            info = plistlib.loads(read(main["masks"][key]))
            raw = np.frombuffer(read(info["mask_file"]), dtype=np.uint8).reshape(tuple(info["mask_shape"]))
            masks.append((raw[1:, 1:, 1:] > 127).transpose(2, 1, 0))
    affine = np.diag([*[float(s) for s in main["spacing"]], 1.0])
    return volume.transpose(2, 1, 0), affine, masks, main


def fetch_invesalius(out: Path, tmp: Path) -> list[dict]:
    volume, affine, masks, main = read_inv3(_debian_file("invesalius-examples", INVESALIUS_FILE, tmp))
    if len(masks) < 2:
        raise SkipSource(f"Cranium.inv3 holds {len(masks)} masks, expected 2 (bone, tissue)")
    label = np.zeros(volume.shape, dtype=np.uint8)
    label[masks[1]] = 1  # threshold -142..2986 HU: soft tissue (and bone)
    label[masks[0]] = 2  # threshold 226..3071 HU: bone
    return [_record(out, "invesalius_head_ct", "CT", "Debian invesalius-examples Cranium.inv3", "GPL-2",
                    volume.astype(np.float32), affine, label, {0: "background", 1: "soft tissue", 2: "bone"})]


FETCHERS = {"nilearn": fetch_nilearn, "slicerio": fetch_slicerio, "nibabel": fetch_nibabel,
            "pycortex": fetch_pycortex, "itk": fetch_itk, "invesalius": fetch_invesalius}


# --------------------------------------------------------------------------------------------- main
def fetch(out: str | os.PathLike, sources=ALL_SOURCES, mni_resolution: int = 1, verbose: bool = True) -> dict:
    """Fetch ``sources`` into ``out``; return the summary ``{"records": [...], "skipped": {source: reason}}``
    and write ``datalist.json`` and ``fetch_summary.json`` there."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(sources) - set(ALL_SOURCES))
    if unknown:
        raise ValueError(f"unknown sources {unknown}; known: {list(ALL_SOURCES)}")
    records, skipped = [], {}
    with tempfile.TemporaryDirectory(prefix="monai_cover_fetch_") as tmpdir:
        for source in sources:
            if verbose:
                print(f"[{source}] fetching ...", flush=True)
            try:
                kwargs = {"resolution": mni_resolution} if source == "nilearn" else {}
                new = FETCHERS[source](out, Path(tmpdir), **kwargs)
            except SkipSource as exc:
                skipped[source] = str(exc)
                if verbose:
                    print(f"[{source}] SKIPPED: {exc}", flush=True)
                continue
            for rec in new:
                rec["fetched_from"] = source
            records.extend(new)
    if not records:
        raise RuntimeError(f"nothing could be fetched: {skipped}")
    items = [{k: r[k] for k in ("image", "label", "name", "modality") if k in r} for r in records]
    val_name = "nibabel_anatomical_t1" if any(r["name"] == "nibabel_anatomical_t1" for r in records) else None
    validation = [it for it in items if it["name"] == val_name] if val_name else items[-1:] if len(items) > 1 else []
    training = [it for it in items if it not in validation]
    datalist = {
        "description": "Real volumes shipped by package registries, gathered by benchmarks/data/fetch_real_data.py",
        "training": training,
        "validation": validation,
        "labelled": [it for it in items if "label" in it],
        "label_names": {r["name"]: r["label_names"] for r in records if "label_names" in r},
        "sources": {r["name"]: {"source": r["source"], "licence": r["licence"]} for r in records},
    }
    with open(out / "datalist.json", "w", encoding="utf-8") as f:
        json.dump(datalist, f, indent=2)
    summary = {"records": records, "skipped": skipped}
    with open(out / "fetch_summary.json", "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    if verbose:
        print_summary(summary, out)
    return summary


def print_summary(summary: dict, out: Path) -> None:
    print(f"\nFetched {len(summary['records'])} volumes into {out}:")
    print(f"{'name':<24}{'mod':<4}{'shape':<18}{'spacing (mm)':<22}{'labels':<10}{'MB':>7}  licence / source")
    for r in summary["records"]:
        labels = str(len(r["label_values"]) - (0 in r["label_values"])) + " cls" if "label" in r else "-"
        print(f"{r['name']:<24}{r['modality']:<4}{'x'.join(map(str, r['shape'])):<18}"
              f"{'x'.join(f'{s:g}' for s in r['spacing']):<22}{labels:<10}{r['bytes'] / 1e6:>7.2f}  "
              f"{r['licence']} / {r['source']}")
    for source, reason in summary["skipped"].items():
        print(f"skipped {source}: {reason}")
    total = sum(r["bytes"] for r in summary["records"]) / 1e6
    print(f"total {total:.1f} MB; datalist: {out / 'datalist.json'}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (images/, labels/, datalist.json)")
    parser.add_argument("--sources", nargs="+", default=list(ALL_SOURCES), choices=ALL_SOURCES)
    parser.add_argument("--skip", nargs="*", default=[], choices=ALL_SOURCES, help="sources to leave out")
    parser.add_argument("--mni-resolution", type=int, default=1, choices=(1, 2), help="MNI template resolution (mm)")
    args = parser.parse_args(argv)
    sources = [s for s in args.sources if s not in set(args.skip)]
    fetch(args.out, sources, mni_resolution=args.mni_resolution)
    return 0


if __name__ == "__main__":
    sys.exit(main())
