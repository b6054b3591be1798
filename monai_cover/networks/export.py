# SPDX-License-Identifier: Apache-2.0
"""The finest pyramid level of a stock network as a plain network: the network with its task head bypassed, so the
features come out of its own ``forward`` and its state dict is unchanged. Unlike
:py:class:`~monai_cover.networks.FeatureLevel` (forward hooks), it scripts with TorchScript and exports to ONNX like
the stock network itself."""

from __future__ import annotations

import copy

import torch.nn as nn

from .adapters import _is_nnunet_unet

__all__ = ["Bypassed", "finest_level_network", "task_head_name"]


class Bypassed(nn.Module):
    """A module's parameters, buffers and children under their own names, with ``forward(x) = x``: the state dict
    of a network whose head is replaced by ``Bypassed(head)`` is the network's, so its weights files load strictly.
    Scripts with TorchScript; an ONNX export leaves the unused weights out."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        for name, child in module.named_children():
            self.add_module(name, child)
        for name, param in module.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in module.named_buffers(recurse=False):
            self.register_buffer(name, buf)

    def forward(self, x):
        return x


def task_head_name(network: nn.Module) -> str | None:
    """The submodule that turns the finest features into the network's output (``None`` where the output *is* the
    finest level, as for MONAI's ``UNet``).

    Raises:
        TypeError: a class without a known head.
    """
    from monai.networks.nets import UNETR, BasicUNet, DynUNet, FlexibleUNet, SegResNet, SwinUNETR, UNet

    heads = [(BasicUNet, "final_conv"), (SegResNet, "conv_final"), (UNETR, "out"), (SwinUNETR, "out"),
             (DynUNet, "output_block"), (FlexibleUNet, "segmentation_head")]
    for cls, name in heads:
        if isinstance(network, cls):
            return name
    if isinstance(network, UNet):
        return None
    if _is_nnunet_unet(network):
        return f"decoder.seg_layers.{len(network.decoder.seg_layers) - 1}"
    raise TypeError(f"finest_level_network: no known task head for {type(network).__name__}; use "
                    "monai_cover.networks.FeatureLevel (forward hooks) or replace its head yourself.")


def finest_level_network(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose ``forward`` returns its finest feature level, ``(B, C_finest, *S)``: the task head
    (:py:func:`task_head_name`) is :py:class:`Bypassed`. The same values as ``FeaturePyramid(network)(x)[-1]`` for
    inputs the network takes as they are; the same ``state_dict`` keys as the network, so a ``models/model.pt``
    loads into it strictly (``monai.bundle ckpt_export`` / ``onnx_export`` load it so).
    ``DynUNet`` and nnU-Net's networks must not use deep supervision (their finest output is then the only one).

    Raises:
        TypeError: a class without a known head (:py:func:`task_head_name`).
    """
    name = task_head_name(network)
    copied = copy.deepcopy(network)
    if name is None:
        return copied
    parent_name, _, child = name.rpartition(".")
    parent = copied.get_submodule(parent_name) if parent_name else copied
    bypassed = Bypassed(parent.get_submodule(child))
    if isinstance(parent, (nn.Sequential, nn.ModuleList)):
        parent[int(child)] = bypassed
    else:
        setattr(parent, child, bypassed)
    return copied
