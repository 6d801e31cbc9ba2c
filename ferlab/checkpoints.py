"""Checkpoints: safetensors weights plus a JSON model card, never pickles.

Layout: ``checkpoints/<name>/model.safetensors`` and ``checkpoints/<name>/card.json``.
``load_model`` rebuilds the architecture the card names through the registry and loads
the tensors into it; nothing in a checkpoint can run code.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .labels import EMOTIONS
from .models import FERNet, create_model
from .preprocess import to_batch

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_FILE, CARD_FILE = "model.safetensors", "card.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".bin")


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unsafe, corrupt or does not match its card."""


def checkpoints_dir() -> Path:
    """``FERLAB_CHECKPOINTS`` if set, else the repository's (or Space's) ``checkpoints/`` beside the
    ``ferlab`` package, else ``./checkpoints`` (ferlab installed from a wheel)."""
    if os.environ.get("FERLAB_CHECKPOINTS"):
        return Path(os.environ["FERLAB_CHECKPOINTS"])
    beside = REPO_ROOT / "checkpoints"
    return beside if beside.is_dir() else Path.cwd() / "checkpoints"


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``FERLAB_DEVICE`` if set, else CUDA, else MPS, else CPU."""
    choice = device or os.environ.get("FERLAB_DEVICE")
    if choice:
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or None
    except Exception:
        return None


def base_card(model: FERNet, mean, std) -> dict:
    """The architecture part of a model card; training adds data, command, metrics."""
    return {
        "architecture": model.architecture,
        "config": model.config,
        "input_size": model.input_size,
        "in_channels": model.in_channels,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "class_names": list(EMOTIONS),
        "explainable_layers": list(model.explainable_layers),
        "default_layer": model.default_layer,
        "supports_cam": model.supports_cam,
        "tokens": model.tokens,
        "params": int(sum(p.numel() for p in model.parameters())),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
    }


STORAGE_DTYPES = ("float32", "float16", "int8")
INT8_SCALE = ".int8_scale"  # suffix of the per-output-channel scales of an int8-stored tensor


def quantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Symmetric per-output-channel int8 for every floating tensor with >= 2 dims (conv and
    linear weights, nearly all the bytes); biases and BatchNorm stay float32.  ``w`` is stored as
    ``round(w / s)`` with ``s = max|w| / 127`` per output channel, and ``s`` as ``<name>.int8_scale``."""
    out = {}
    for name, w in tensors.items():
        if not w.is_floating_point() or w.dim() < 2:
            out[name] = w
            continue
        w = w.float()
        scale = w.abs().flatten(1).amax(1).clamp_min(1e-12) / 127
        out[name] = torch.round(w / scale.view(-1, *[1] * (w.dim() - 1))).clamp(-127, 127).to(torch.int8)
        out[name + INT8_SCALE] = scale
    return out


def dequantize_int8(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of ``quantize_int8`` (float32); tensors without a scale pass through."""
    out = {k: v for k, v in tensors.items() if not k.endswith(INT8_SCALE)}
    for key in tensors:
        if not key.endswith(INT8_SCALE):
            continue
        name, scale = key[:-len(INT8_SCALE)], tensors[key]
        q = out.get(name)
        if q is None or q.dtype != torch.int8 or q.dim() < 2 or scale.shape != (q.shape[0],):
            raise ValueError(f"{key} does not match an int8 tensor {name!r} with {scale.numel()} output channels")
        out[name] = q.float() * scale.float().view(-1, *[1] * (q.dim() - 1))
    return out


def encode_weights(tensors: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """``tensors`` in the form ``storage`` writes them: float32 as they are, float16 halved, int8
    through ``quantize_int8``."""
    if storage == "float32":
        return dict(tensors)
    if storage == "float16":
        return {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if storage == "int8":
        return quantize_int8(tensors)
    raise ValueError(f"unknown storage {storage!r}; expected one of {', '.join(STORAGE_DTYPES)}")


def decode_weights(encoded: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Encoded tensors (any storage) as they load: float32."""
    return {k: v.float() if v.is_floating_point() else v for k, v in dequantize_int8(encoded).items()}


def stored(tensors: dict[str, torch.Tensor], storage: str) -> dict[str, torch.Tensor]:
    """``tensors`` as they come back after saving with ``storage`` (float32), so that what is
    measured before saving is what loads."""
    return decode_weights(encode_weights(tensors, storage))


def save_checkpoint(model: FERNet, card: dict, out_dir: str | Path, storage: str = "float32",
                    tensors: dict[str, torch.Tensor] | None = None) -> Path:
    """Write weights and card atomically into ``out_dir``; returns the folder.  ``storage``:
    float32, float16 or int8 (``encode_weights``); every storage loads as float32.  ``tensors``:
    the model's weights already encoded (e.g. ``quantization.gptq_int8``), written instead."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if tensors is None:
        tensors = encode_weights(state, storage)
    else:
        _check_encoded(tensors, state)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    card = dict(card, storage_dtype=storage)
    tmp_w, tmp_c = out / (WEIGHTS_FILE + ".tmp"), out / (CARD_FILE + ".tmp")
    save_file(tensors, str(tmp_w), metadata={"architecture": card["architecture"]})
    tmp_c.write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    os.replace(tmp_w, out / WEIGHTS_FILE)
    os.replace(tmp_c, out / CARD_FILE)
    return out


def _check_encoded(tensors: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> None:
    decoded = dequantize_int8(tensors)
    wrong = sorted(set(decoded) ^ set(state)) + [
        k for k in state if k in decoded and (decoded[k].shape != state[k].shape
                                             or decoded[k].is_floating_point() != state[k].is_floating_point())]
    if wrong:
        raise ValueError(f"the encoded tensors do not match the model's weights: {', '.join(wrong[:5])}")


def update_card(folder: str | Path, **fields) -> dict:
    path = Path(folder) / CARD_FILE
    card = json.loads(path.read_text())
    card.update(fields)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return card


def _json_default(o):
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def resolve(name_or_path: str | Path) -> Path:
    """A checkpoint folder from a name in ``checkpoints/``, a folder, or its weights file."""
    path = Path(name_or_path)
    if path.suffix.lower() in _PICKLE_SUFFIXES:
        raise CheckpointError(f"refusing {path.name}: ferlab never unpickles checkpoints "
                              "(pickles can run arbitrary code); convert the weights to safetensors")
    if path.is_file():
        path = path.parent
    if not path.is_dir():
        candidate = checkpoints_dir() / str(name_or_path)
        if not candidate.is_dir():
            available = ", ".join(list_models()) or "none"
            raise CheckpointError(f"no checkpoint {str(name_or_path)!r} (looked in {checkpoints_dir()}; "
                                  f"available: {available})")
        path = candidate
    return path


def read_card(folder: str | Path) -> dict:
    path = Path(folder) / CARD_FILE
    if not path.is_file():
        raise CheckpointError(f"{folder} has no {CARD_FILE}")
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    for key in ("architecture", "config"):
        if key not in card:
            raise CheckpointError(f"{path} lacks {key!r}")
    return card


def load_weights(folder: Path) -> dict[str, torch.Tensor]:
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        pickles = [p.name for p in folder.iterdir() if p.suffix.lower() in _PICKLE_SUFFIXES]
        hint = f" (found {', '.join(pickles)}: pickled checkpoints are refused)" if pickles else ""
        raise CheckpointError(f"{folder} has no {WEIGHTS_FILE}{hint}")
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{weights} is corrupt or truncated ({exc}); re-download or re-export it") from exc
    try:
        return dequantize_int8(tensors)
    except ValueError as exc:
        raise CheckpointError(f"{weights}: {exc}") from exc


def trained_labels(card: dict) -> str:
    """The label set a checkpoint was trained on: ``fer2013`` (the default) or ``ferplus``."""
    return card.get("data", {}).get("labels", "fer2013")


def metrics_key(card: dict, split: str, labels: str | None = None, tta: bool = False) -> str:
    """Where a card keeps a score: ``test``, ``test_tta``... against the labels the model was trained
    on; against the other set, the set is named: ``test_ferplus`` (a FER2013 model scored against
    the FER+ majority), ``test_fer2013`` (the FER+ model against the FER2013 labels)."""
    labels = labels or trained_labels(card)
    return split + ("" if labels == trained_labels(card) else f"_{labels}") + ("_tta" if tta else "")


def list_models(folder: str | Path | None = None, labels: str | None = None) -> list[str]:
    """Names of the checkpoints in ``folder`` (default ``checkpoints/`` or ``FERLAB_CHECKPOINTS``);
    with ``labels``, only those trained on that label set (``fer2013`` or ``ferplus``)."""
    root = Path(folder) if folder is not None else checkpoints_dir()
    if not root.is_dir():
        return []
    names = sorted(p.name for p in root.iterdir() if (p / CARD_FILE).is_file() and (p / WEIGHTS_FILE).is_file())
    if labels is not None:
        names = [n for n in names if trained_labels(read_card(root / n)) == labels]
    return names


@dataclass
class FERClassifier:
    """A loaded checkpoint: ``module`` (eval mode), ``card`` and ``predict``."""

    name: str
    module: FERNet
    card: dict
    device: torch.device
    path: Path | None = None

    @property
    def class_names(self) -> list[str]:
        return list(self.card.get("class_names", EMOTIONS))

    def preprocess(self, images) -> torch.Tensor:
        """A batch of face crops (a list, or an ``(N, H, W[, C])`` array) -> the normalized input tensor."""
        return to_batch(images, self.card).to(self.device)

    def predict(self, images, detect: bool = True) -> np.ndarray:
        """Probabilities ``(N, 7)`` for a batch of images: a list (PIL images, arrays, bytes, paths)
        or an ``(N, H, W[, C])`` array; one image is ``[image]``.

        Each photo goes through ``ferlab.analyze``'s pipeline: its largest face, found, levelled and
        framed as FER2013 frames faces (the centre square when no face is found).  ``detect=False``:
        the images are face crops already (centred square, resized), as FER2013's are."""
        from .pipeline import largest_face_probabilities
        return largest_face_probabilities(self, images, detect=detect)


def load_model(name_or_path: str | Path, device: str | torch.device | None = None) -> FERClassifier:
    """Load a checkpoint by name (from ``checkpoints/`` or ``FERLAB_CHECKPOINTS``) or path."""
    folder = resolve(name_or_path)
    card = read_card(folder)
    state = load_weights(folder)
    try:
        module = create_model(card["architecture"], **card["config"])
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{folder}: card names an architecture ferlab cannot build: {exc}") from exc
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        detail = "; ".join(s for s in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
            f"shape mismatch {wrong[:3]}" if wrong else "") if s)
        raise CheckpointError(f"{folder}: weights do not match the card's {card['architecture']} "
                              f"config {card['config']}: {detail}")
    module.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    dev = pick_device(device)
    module.to(dev).eval()
    if dev.type == "cpu":
        module.to(memory_format=torch.channels_last)
    return FERClassifier(name=folder.name, module=module, card=card, device=dev, path=folder)
