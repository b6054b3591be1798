# SPDX-License-Identifier: Apache-2.0
"""The names of a segmentation's classes, for logs, TensorBoard and evaluation files."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence

__all__ = ["class_names", "write_class_names"]


def class_names(names: Sequence[str] | None, num_classes: int, info: Mapping | None = None) -> list[str]:
    """``num_classes`` class names, background first.

    Args:
        names: the user's names (``--class_names "['background','liver','tumour']"``); empty: from the data.
        num_classes: the number of classes, background included.
        info: a datalist's ``info`` (:py:func:`~monai_cover.data.get_datalist`): its ``labels`` (a Decathlon
            ``dataset.json``'s, the 2-D demo's MNI tissue classes), else for the 3-D demo the chest CT's segment names.

    Returns:
        the names; classes the data does not name are ``class<i>``.

    Raises:
        ValueError: ``names`` given with another length than ``num_classes``.
    """
    num_classes = int(num_classes)
    if names:
        names = [str(n) for n in names]
        if len(names) != num_classes:
            raise ValueError(
                f"--class_names has {len(names)} name(s) {names}, but num_classes is {num_classes}: give one name per "
                "class, background first."
            )
        return names
    known: dict[int, str] = {}
    info = info or {}
    if isinstance(info.get("labels"), Mapping):  # a Decathlon dataset.json, or the 2-D demo's MNI tissue classes
        known = {int(k): str(v) for k, v in info["labels"].items() if str(k).isdigit()}
    elif info.get("source") == "demo":
        from monai_cover.data.demo import chest_ct_label_names

        known = chest_ct_label_names()
    out = [known.get(i, "background" if i == 0 else f"class{i}") for i in range(num_classes)]
    return out


def write_class_names(names: Sequence[str], folder: str | os.PathLike) -> str:
    """Write ``<folder>/classes.json``, ``{"0": "background", "1": ..., ...}`` (label value -> name), next to
    segmentations, so their values can be read; returns the path."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(str(folder), "classes.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump({str(i): str(n) for i, n in enumerate(names)}, f, indent=1)
    return path
