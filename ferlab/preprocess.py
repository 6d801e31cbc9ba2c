"""The one preprocessing path shared by training, the app and the audit.

``to_gray_uint8`` turns any image a user can hand us into the square 8-bit grayscale
array FER2013 is made of; ``normalize`` turns a batch of those into the model's input
tensor as its card describes (size, channels, mean/std).  ``to_tensor`` is the two
composed for one image.  Training decodes the dataset with ``to_gray_uint8`` once and
calls ``normalize`` on augmented batches, so the app sees exactly what training saw.

Augmentation presets (torchvision transforms v2) are named in training configs.
"""
from __future__ import annotations

import io
from typing import Any

import cv2
import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision.transforms import v2

# Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 50_000_000
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


class InputError(ValueError):
    """An input that cannot be turned into a face image; the message is for the user."""


def open_image(data: bytes | str | Any) -> Image.Image:
    """Open image bytes or a file path with PIL, refusing bombs and non-images clearly."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    try:
        image = Image.open(source)
        if image.width * image.height > MAX_PIXELS:
            raise InputError(f"image is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,} pixels")
        image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputError(f"image refused: larger than the {MAX_PIXELS:,}-pixel limit") from exc
    except Exception as exc:
        raise InputError(f"not a readable image ({type(exc).__name__}: {exc})") from exc
    return image


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def upright(image: Image.Image) -> Image.Image:
    """Refuse images over the pixel limit (from the header), then apply the EXIF orientation."""
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"image is {image.width}x{image.height} pixels; the limit is {MAX_PIXELS:,} pixels")
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # broken EXIF must not lose the picture
        return image


def flatten_alpha(image: Image.Image) -> Image.Image:
    """RGB, with any transparency (alpha, palette transparency) composited on white."""
    rgba = image.convert("RGBA")
    return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")


def _pil_to_array(image: Image.Image) -> np.ndarray:
    image = upright(image)
    if image.mode in HIGH_DEPTH_MODES:
        return np.asarray(image)  # high-depth: scaled in _array_to_gray
    if image.mode in ("P", "RGBA", "LA", "PA", "La", "RGBa"):
        image = flatten_alpha(image)
    return np.asarray(image.convert("L"))


def _array_to_gray(array: np.ndarray) -> np.ndarray:
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
        a = np.moveaxis(a, 0, -1)  # CHW -> HWC
    if a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[-1] not in (3, 4)):
        raise InputError(f"expected an HxW or HxWxC image array, got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise InputError("the image is empty (zero width or height)")
    if a.shape[0] * a.shape[1] > MAX_PIXELS:
        raise InputError(f"image is {a.shape[1]}x{a.shape[0]} pixels; the limit is {MAX_PIXELS:,} pixels")
    if a.dtype == np.bool_:
        a = a.astype(np.uint8) * 255
    elif a.dtype == np.uint16:
        a = (a.astype(np.float32) / 257.0)
    elif a.dtype.kind == "f":
        with np.errstate(over="ignore", invalid="ignore"):  # huge float64 values become inf, then 0
            a = np.nan_to_num(a.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        if a.size and a.max() <= 1.0 and a.min() >= 0.0:
            a = a * 255.0
    elif a.dtype.kind in "iu" and a.dtype != np.uint8:
        a = a.astype(np.float32)
        if a.size and a.max() > 255:
            a = a / 257.0 if a.max() <= 65535 else a * (255.0 / a.max())
    elif a.dtype.kind not in "iuf":
        raise InputError(f"unsupported image dtype {a.dtype}")
    a = np.clip(a, 0, 255).astype(np.uint8)
    if a.ndim == 3:
        if a.shape[-1] == 4:  # composite transparent pixels on white
            alpha = a[..., 3:4].astype(np.float32) / 255.0
            a = (a[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
        a = cv2.cvtColor(np.ascontiguousarray(a), cv2.COLOR_RGB2GRAY)
    return a


def center_square(gray: np.ndarray) -> np.ndarray:
    """Largest centred square: FER faces are square and stretching distorts expressions."""
    h, w = gray.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return gray[top:top + side, left:left + side]


def to_gray_uint8(image: Any, size: int | None = 48) -> np.ndarray:
    """Any PIL image (any mode, EXIF-rotated), numpy array (uint8/uint16/float/bool; HxW,
    HxWxC or CxHxW, RGB order), or image bytes -> square ``(size, size)`` uint8 grayscale
    (``size=None``: the centred square at its own resolution)."""
    if isinstance(image, (bytes, bytearray)):
        image = open_image(image)
    if isinstance(image, Image.Image):
        gray = _array_to_gray(_pil_to_array(image))
    elif isinstance(image, (np.ndarray, torch.Tensor)):
        gray = _array_to_gray(image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else image)
    else:
        raise InputError(f"expected a PIL image, a numpy array or image bytes, got {type(image).__name__}")
    gray = center_square(gray)
    if size is not None and gray.shape[0] != size:
        interp = cv2.INTER_AREA if gray.shape[0] > size else cv2.INTER_LINEAR
        gray = cv2.resize(gray, (size, size), interpolation=interp)
    return np.ascontiguousarray(gray)


def normalize(batch: torch.Tensor, card: dict) -> torch.Tensor:
    """uint8 (or 0-255 float) grayscale ``(N, 1, H, W)`` -> normalized ``(N, C, H, W)`` float32."""
    x = batch.float().div_(255.0)
    channels = int(card.get("in_channels", 1))
    if x.shape[1] != channels:
        x = x.expand(-1, channels, -1, -1)
    mean = torch.as_tensor(card.get("mean", [0.5] * channels), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    std = torch.as_tensor(card.get("std", [0.5] * channels), dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


def as_batch(images) -> list:
    """The images of an explicit batch, never guessed from a shape: a ``list`` or ``tuple`` of
    images, or an array or tensor whose first axis is the batch (``(N, H, W)`` grayscale or
    ``(N, H, W, C)`` colour).  Anything else is refused: wrap one image as ``[image]``."""
    if isinstance(images, (np.ndarray, torch.Tensor)):
        if images.ndim not in (3, 4):
            raise InputError(f"a batch array must be (N, H, W) or (N, H, W, C); got shape {tuple(images.shape)}"
                             " (for one image, pass [image])")
        return list(images)
    if not isinstance(images, (list, tuple)):
        raise InputError(f"expected a batch (a list of images or an (N, H, W[, C]) array), got "
                         f"{type(images).__name__}; for one image, pass [image]")
    return list(images)


def to_gray_batch(images, size: int = 48) -> np.ndarray:
    """A batch of inputs (see ``as_batch``) -> ``(N, size, size)`` uint8 grayscale stack."""
    images = as_batch(images)
    return np.stack([to_gray_uint8(im, size) for im in images]) if images else np.empty((0, size, size), np.uint8)


def to_batch(images, card: dict) -> torch.Tensor:
    """A batch of inputs (see ``to_gray_batch``) -> ``(N, C, H, W)`` normalized batch on the CPU."""
    gray = to_gray_batch(images, int(card.get("input_size", 48)))
    return normalize(torch.from_numpy(gray).unsqueeze(1), card)


def to_tensor(image, card: dict) -> torch.Tensor:
    """One input -> the model's normalized ``(C, H, W)`` tensor, as its card describes."""
    size = int(card.get("input_size", 48))
    gray = torch.from_numpy(to_gray_uint8(image, size))[None, None]
    return normalize(gray, card)[0]


# --------------------------------------------------------------------------- augmentation

class RandomResample(torch.nn.Module):
    """A face seen by fewer pixels than the model takes: the image shrunk to a side drawn from
    ``sides`` (with or without antialiasing, as cameras and resizers differ) and scaled back up
    bilinearly, as ``faces.warp_crop`` enlarges a small face.  Random draws come from torch's
    generator, so ``AugmentedBatches``' per-image seeds make it reproducible."""

    def __init__(self, sides: tuple[int, int] = (16, 44)):
        super().__init__()
        self.sides = sides

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        side = int(torch.randint(self.sides[0], self.sides[1] + 1, ()).item())
        antialias = bool(torch.randint(0, 2, ()).item())
        small = v2.functional.resize(image, [side, side], antialias=antialias)
        return v2.functional.resize(small, list(image.shape[-2:]), antialias=False)


def augmentation(name: str, size: int = 48) -> v2.Transform:
    """A named augmentation preset for one ``(1, H, W)`` uint8 image tensor."""
    presets = {
        "none": lambda: v2.Identity(),
        # the literature's configurations 1-3 (VGG19 report)
        "basic": lambda: v2.Compose([
            v2.RandomRotation(10),
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
        ]),
        # configuration 4: stronger geometry plus photometric and elastic changes
        "aggressive": lambda: v2.Compose([
            v2.RandomRotation(15),
            v2.RandomHorizontalFlip(),
            v2.RandomResizedCrop(size, scale=(0.7, 1.0), ratio=(0.85, 1.15), antialias=True),
            v2.ColorJitter(brightness=0.3, contrast=0.3),
            v2.RandomApply([v2.ElasticTransform(alpha=20.0, sigma=4.0)], p=0.3),
            v2.RandomPerspective(distortion_scale=0.2, p=0.3),
            v2.RandomAffine(degrees=0, translate=(0.08, 0.08), scale=(0.9, 1.1), shear=5),
        ]),
        # the residual-SE report: flip, brightness/contrast, affine, blur, random erasing
        "erase": lambda: v2.Compose([
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.25, contrast=0.25)], p=0.5),
            v2.RandomAffine(degrees=10, translate=(0.1, 0.1), scale=(0.9, 1.1)),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
            v2.RandomErasing(p=0.5, scale=(0.02, 0.15), value=0),
        ]),
        # faces as the photo pipeline cuts them: detector framing jitter (the frame's side +-10%, its
        # centre a few pixels off; results/face_framing.md), residual tilt, the blur of small faces
        # resampled to 48 px, exposure; edge pixels repeated where the frame leaves the picture
        "photo": lambda: v2.Compose([
            v2.Pad(size // 8, padding_mode="edge"),
            v2.RandomRotation(8),
            v2.RandomResizedCrop(size, scale=(0.55, 0.8), ratio=(0.95, 1.05), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.3),
        ]),
        # faces as photo scenes give them (docs/experiments/ferlab_photo_scene.md): the pipeline's
        # frame differs from FER2013's own by a side ratio of 0.8-1.2, a shift of +-8% and a turn of
        # +-10 degrees (10th-90th percentiles on PublicTest scenes), and small faces in a group photo
        # are seen by fewer than 48 pixels
        "scene": lambda: v2.Compose([
            v2.Pad(size // 2, padding_mode="edge"),
            v2.RandomAffine(degrees=10, translate=(0.04, 0.04), scale=(0.83, 1.25)),
            v2.CenterCrop(size),
            v2.RandomHorizontalFlip(),
            v2.RandomApply([RandomResample((size // 3, size - 4))], p=0.4),
            v2.RandomApply([v2.ColorJitter(brightness=0.2, contrast=0.2)], p=0.5),
            v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.2),
        ]),
    }
    if name not in presets:
        raise ValueError(f"unknown augmentation {name!r}; expected one of {', '.join(presets)}")
    return presets[name]()


AUGMENTATIONS = ("none", "basic", "aggressive", "erase", "photo", "scene")
