"""int8 rounding that compensates its own error (GPTQ, Frantar et al., ICLR 2023).

The shipped int8 format (``checkpoints.quantize_int8``) stores each conv/linear weight row as int8
codes times one scale, ``max|w| / 127``.  Rounding every weight to its nearest code minimizes the
*weight* error; what matters is the *output* error, and a row whose inputs are correlated can
cancel most of its rounding error if the weights it has not rounded yet absorb it.  GPTQ does that
column by column with the inverse Hessian ``(X X^T)^-1`` of the layer's inputs, measured on a few
hundred unlabeled images.  Same file, same scales, same loader; only the codes differ.
"""
from __future__ import annotations

import copy

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoints import INT8_SCALE, dequantize_int8, quantize_int8
from .preprocess import normalize


CALIBRATION_IMAGES = 1024


def calibration_images(train_x: np.ndarray, n: int = CALIBRATION_IMAGES, seed: int = 0) -> np.ndarray:
    """A fixed random subset of the training images (no labels) for GPTQ's int8 calibration."""
    return train_x[np.sort(np.random.default_rng(seed).permutation(len(train_x))[:n])]


class _Captured(Exception):
    """Raised by the input hook: the rest of the forward pass is not needed."""


def _input_hessian(module: nn.Module, layer: nn.Module, images: np.ndarray, card: dict,
                   batch_size: int) -> torch.Tensor | None:
    """``sum x x^T`` over what ``layer``'s weight rows multiply, per group: ``(groups, k, k)``
    with ``k`` = in_channels / groups x kernel area (conv) or in_features (linear)."""
    groups = getattr(layer, "groups", 1)
    total = None

    def hook(_, inputs):
        nonlocal total
        t = inputs[0].detach().float()
        if isinstance(layer, nn.Conv2d):
            t = F.unfold(t, layer.kernel_size, dilation=layer.dilation, padding=layer.padding, stride=layer.stride)
            t = t.transpose(1, 2).reshape(-1, t.shape[1])  # (N * positions, in_channels * kernel area)
        else:
            t = t.reshape(-1, t.shape[-1])
        t = t.reshape(len(t), groups, -1).transpose(0, 1)  # (groups, rows, k)
        h = (t.transpose(1, 2) @ t).double()
        total = h if total is None else total + h
        raise _Captured

    handle = layer.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                batch = normalize(torch.from_numpy(images[start:start + batch_size]).unsqueeze(1), card)
                try:
                    module(batch)
                except _Captured:
                    pass
    finally:
        handle.remove()
    return total


def gptq_codes(weight: torch.Tensor, hessian: torch.Tensor, damp: float = 0.01, block: int = 128) -> torch.Tensor:
    """int8 codes for ``weight`` (out, in/groups, ...) with the shipped scales (max|w| / 127 per row),
    rounded column by column, each rounding error spread over the columns not yet rounded
    (``hessian``: ``(groups, k, k)``)."""
    groups, k = hessian.shape[0], hessian.shape[1]
    W = weight.detach().double().reshape(groups, -1, k).clone()  # (groups, rows per group, k)
    # exactly quantize_int8's float32 scales, which are what the file stores
    scale = (weight.detach().float().abs().flatten(1).amax(1).clamp_min(1e-12) / 127).double().reshape(groups, -1, 1)
    H = hessian.clone()
    diagonal = torch.diagonal(H, dim1=1, dim2=2)
    dead = diagonal == 0  # an input that is always 0: its weights cannot matter
    diagonal += damp * diagonal.mean(1, keepdim=True) + dead.double()
    # the upper Cholesky factor of H^-1 gives each step's update (GPTQ, Algorithm 1)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    codes = torch.empty_like(W)
    for start in range(0, k, block):  # GPTQ's lazy batch updates: the columns after a block once per block
        end = min(start + block, k)
        errors = torch.empty_like(W[:, :, start:end])
        for i in range(start, end):
            q = torch.round(W[:, :, i:i + 1] / scale).clamp(-127, 127)
            codes[:, :, i:i + 1] = q
            err = (W[:, :, i:i + 1] - q * scale) / U[:, i, i].view(-1, 1, 1)
            W[:, :, i + 1:end] -= err * U[:, i:i + 1, i + 1:end]
            errors[:, :, i - start:i - start + 1] = err
        W[:, :, end:] -= errors @ U[:, start:end, end:]
    return codes.reshape(weight.shape).to(torch.int8)


def gptq_int8(module: nn.Module, images: np.ndarray, card: dict, batch_size: int = 128,
              damp: float = 0.01) -> dict[str, torch.Tensor]:
    """``module``'s weights in the int8 file format (``quantize_int8``'s keys, dtypes and scales),
    with GPTQ codes for every Conv2d and Linear.  ``images``: uint8 ``(N, H, W)`` at the model's size,
    preprocessed with ``card``; a few hundred unlabeled training images are enough.  Layers are
    rounded one at a time in registration order, each on the inputs the already-rounded layers
    give it; a layer the forward pass never reaches keeps nearest rounding.  ``module`` is not
    changed."""
    # contiguous whatever the caller's layout: the codes of near-tie weights follow the last bits of
    # the calibration activations, and channels-last convs round them differently
    work = copy.deepcopy(module).float().eval().to(memory_format=torch.contiguous_format)
    encoded = quantize_int8({k: v.detach().cpu() for k, v in work.state_dict().items()})
    for name, layer in work.named_modules():
        if not isinstance(layer, (nn.Conv2d, nn.Linear)):
            continue
        key = f"{name}.weight"
        hessian = _input_hessian(work, layer, images, card, batch_size)
        if hessian is None:
            continue
        codes = gptq_codes(layer.weight, hessian, damp)
        encoded[key] = codes
        # the layers after this one are calibrated on the inputs it will really give them
        with torch.no_grad():
            layer.weight.copy_(dequantize_int8({key: codes, key + INT8_SCALE: encoded[key + INT8_SCALE]})[key])
    return encoded
