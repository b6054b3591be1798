# SPDX-License-Identifier: Apache-2.0
"""Dictionary form of the COVER pair generator: :py:class:`RandCoverPaird` (aliases ``RandCoverPairD``,
``RandCoverPairDict``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import TransformBackends

from monai_cover.transforms.array import RandCoverPair

__all__ = ["RandCoverPaird", "RandCoverPairD", "RandCoverPairDict"]


class RandCoverPaird(RandomizableTransform, MapTransform):
    """Dictionary wrapper of :py:class:`~monai_cover.transforms.array.RandCoverPair`.

    Reads one image ``(C, H, W[, D])`` from ``keys`` and adds four entries (defaults in brackets):

    - ``view_a_key`` (``"view_a"``): ``(C, *crop)`` float32, appearance augmentation only;
    - ``view_b_key`` (``"view_b"``): ``(C, *crop)`` float32, spatial augmentation only;
    - ``ddf_key`` (``"ddf"``): ``(spatial_dims, *crop)`` float32, voxels, ``view_b(p) = geom_a(p + ddf(p))``;
    - ``overlap_key`` (``"overlap"``): ``(1, *crop)`` float32 in {0, 1}.

    All four are MetaTensors (with meta tracking on) with the crop's affine. The input entry is kept unless
    ``keep_input=False`` (drop it when images of different sizes are batched together). Exactly one image
    key is supported. Errors name the key. Every other keyword argument goes to ``RandCoverPair``.

    Example::

        RandCoverPaird(keys="image", spatial_size=(96, 96, 96))  # 3D defaults, bound 62 voxels
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        keys: KeysCollection = "image",
        view_a_key: str = "view_a",
        view_b_key: str = "view_b",
        ddf_key: str = "ddf",
        overlap_key: str = "overlap",
        keep_input: bool = True,
        allow_missing_keys: bool = False,
        **pair_kwargs: Any,
    ) -> None:
        """
        Args:
            keys: the one image key. Default ``"image"``.
            view_a_key, view_b_key, ddf_key, overlap_key: output keys (distinct).
            keep_input: keep the input entry in the output dict. Default True.
            allow_missing_keys: skip silently when the image key is absent.
            pair_kwargs: the arguments of :py:class:`~monai_cover.transforms.array.RandCoverPair`
                (``spatial_size``, ``margin``, ``rotate_range``, ``scale_range``, ``shear_range``,
                ``translate_range``, ``elastic``, ``elastic_alpha_range``, ``elastic_sigma_range``,
                ``spatial_prob``, ``max_displacement``, ``max_redraws``, ``appearance``), same defaults.
        """
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob=1.0)
        if len(self.keys) != 1:
            raise ValueError(f"keys must name exactly one image, got {list(self.keys)}.")
        out_keys = [view_a_key, view_b_key, ddf_key, overlap_key]
        if len(set(out_keys)) != 4:
            raise ValueError(f"view_a_key, view_b_key, ddf_key and overlap_key must be distinct, got {out_keys}.")
        self.view_a_key, self.view_b_key, self.ddf_key, self.overlap_key = out_keys
        self.keep_input = bool(keep_input)
        self.pair = RandCoverPair(**pair_kwargs)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandCoverPaird:
        super().set_random_state(seed, state)
        self.pair.set_random_state(seed, state)
        return self

    def __call__(self, data: Mapping[Hashable, Any], randomize: bool = True) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            out = self.pair.make_pair(d[key], randomize=randomize, name=f"RandCoverPaird key '{key}'")
            if not self.keep_input:
                del d[key]
            d[self.view_a_key], d[self.view_b_key], d[self.ddf_key], d[self.overlap_key] = out
        return d


RandCoverPairD = RandCoverPairDict = RandCoverPaird
