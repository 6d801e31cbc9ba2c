"""FER2013 through Hugging Face `datasets`.

Three kinds of source, all loaded with `datasets.load_dataset`:

* ``parquet``: a folder of ``train.parquet`` / ``valid.parquet`` / ``test.parquet``
  laid out like ``../shared/data/fer2013`` (Training / PublicTest / PrivateTest).
* ``hub``: a Hub dataset id (default ``clip-benchmark/wds_fer2013``: webdataset shards with
  ``jpg`` + ``cls`` columns and train / test splits), or a local folder of such shards.
* ``imagefolder``: the Kaggle layout, ``train/<emotion>/*.jpg`` and ``test/<emotion>/*.jpg``.

Sources with only train and test splits have no PublicTest / PrivateTest distinction:
there ``valid`` is a fixed, stratified 10% hold-out of Training (``train`` is the rest)
and ``test`` is the whole test split (the same rows as ``test_full``).

Every split comes back with ``image`` (PIL) and ``label`` (FER2013 order, see
``ferlab.labels.EMOTIONS``), plus ``ferplus_votes`` when the source has them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import datasets
import numpy as np

from .labels import EMOTIONS, FERPLUS_TO_FER, NUM_CLASSES, name_to_index

log = logging.getLogger(__name__)

SPLITS = ("train", "valid", "test", "test_full")
DEFAULT_HUB_ID = "clip-benchmark/wds_fer2013"
REPO_ROOT = Path(__file__).resolve().parent.parent
LOCAL_COPY = REPO_ROOT.parent / "shared" / "data" / "fer2013"
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0

# Per-class counts of the original FER2013 splits (angry ... neutral).  They differ in
# every class, so a dataset's own counts identify its label permutation.
COUNT_SIGNATURES = {
    "train": (3995, 436, 4097, 7215, 4830, 3171, 4965),
    "valid": (467, 56, 496, 895, 653, 415, 607),
    "test": (491, 55, 528, 879, 594, 416, 626),
    "test_full": (958, 111, 1024, 1774, 1247, 831, 1233),
}

_IMAGE_COLUMNS = ("image", "jpg", "png", "jpeg", "img", "webp")
_LABEL_COLUMNS = ("label", "cls", "labels", "emotion")
_KEEP_COLUMNS = ("image", "label", "ferplus_votes", "ferplus_missing", "fer2013_row", "usage")


class DataSourceError(ValueError):
    """The data source is unknown, unreachable or not shaped like FER2013."""


def default_source() -> str:
    """``FERLAB_DATA`` if set, else the local copy beside the repo, else the Hub id."""
    env = os.environ.get("FERLAB_DATA", "").strip()
    if env:
        return env
    if LOCAL_COPY.is_dir():
        return str(LOCAL_COPY)
    return DEFAULT_HUB_ID


def _parquet_files(folder: Path) -> dict[str, str]:
    files = {}
    for split in ("train", "valid", "test"):
        found = sorted(folder.glob(f"{split}*.parquet")) or sorted(folder.glob(f"data/{split}*.parquet"))
        if found:
            files[split] = [str(f) for f in found]
    return files


def source_kind(source: str) -> str:
    """Which loader a source needs: ``parquet``, ``imagefolder`` or ``hub``."""
    path = Path(os.path.expanduser(str(source)))
    if path.is_dir():
        if _parquet_files(path):
            return "parquet"
        if (path / "train").is_dir() and any(p.is_dir() for p in (path / "train").iterdir()):
            if not any((path / "train").glob("*.tar")):
                return "imagefolder"
        if any(path.rglob("*.tar")):
            return "hub"  # a local mirror of a webdataset Hub repo loads the same way
        raise DataSourceError(
            f"{path} is a folder but not a FER2013 source: expected train/valid/test .parquet files "
            "(like ../shared/data/fer2013), webdataset .tar shards, or train/<emotion>/*.jpg image folders")
    if path.exists():
        raise DataSourceError(f"{path} is a file; a FER2013 source is a folder or a Hugging Face Hub dataset id")
    text = str(source)
    if text.count("/") == 1 and not text.startswith((".", "/", "~")) and " " not in text:
        return "hub"
    raise DataSourceError(
        f"unknown data source {text!r}: expected a local folder (parquet files, webdataset shards or "
        f"Kaggle-style image folders) or a Hub dataset id like {DEFAULT_HUB_ID!r}; set FERLAB_DATA to choose one")


def _load_raw(source: str, kind: str) -> datasets.DatasetDict:
    try:
        if kind == "parquet":
            return datasets.load_dataset("parquet", data_files=_parquet_files(Path(source)))
        if kind == "imagefolder":
            return datasets.load_dataset("imagefolder", data_dir=str(source))
        return datasets.load_dataset(str(source))
    except DataSourceError:
        raise
    except Exception as exc:  # network, missing repo, bad files: one clear message
        hint = ("The Hugging Face Hub may be unreachable from here. " if kind == "hub" else "")
        raise DataSourceError(
            f"could not load FER2013 from {source!r} ({kind}): {type(exc).__name__}: {exc}. {hint}"
            "Set FERLAB_DATA to a local copy: a folder with train/valid/test .parquet files "
            "or Kaggle-style train/<emotion>/ and test/<emotion>/ image folders.") from exc


def _standard_columns(ds: datasets.Dataset, where: str) -> datasets.Dataset:
    image_col = next((c for c in _IMAGE_COLUMNS if c in ds.column_names), None)
    label_col = next((c for c in _LABEL_COLUMNS if c in ds.column_names), None)
    if image_col is None or label_col is None:
        raise DataSourceError(
            f"{where} has columns {ds.column_names}; expected an image column ({'/'.join(_IMAGE_COLUMNS)}) "
            f"and a label column ({'/'.join(_LABEL_COLUMNS)})")
    if image_col != "image":
        ds = ds.rename_column(image_col, "image")
    if label_col != "label":
        ds = ds.rename_column(label_col, "label")
    if not isinstance(ds.features["image"], datasets.Image):
        ds = ds.cast_column("image", datasets.Image())
    return ds.remove_columns([c for c in ds.column_names if c not in _KEEP_COLUMNS])


def infer_label_permutation(counts, signature_split: str) -> np.ndarray:
    """Map raw label ids to FER2013 ids by matching per-class counts to FER2013's.

    ``counts[r]`` is how many rows carry raw label ``r``.  Returns ``perm`` with
    ``perm[r]`` the FER2013 index, or raises when no permutation fits.
    """
    counts = [int(c) for c in counts]
    signature = COUNT_SIGNATURES[signature_split]
    if len(counts) == NUM_CLASSES and sorted(counts) == sorted(signature):
        return np.array([signature.index(c) for c in counts], dtype=np.int64)
    raise DataSourceError(
        f"cannot infer the label order: the {signature_split} split has class counts {counts}, "
        f"which match no permutation of FER2013's {signature_split} counts {list(signature)} "
        f"({', '.join(EMOTIONS)}). Give the dataset ClassLabel names or use a complete FER2013 copy.")


def _label_permutation(ds: datasets.Dataset, signature_split: str) -> np.ndarray:
    feature = ds.features["label"]
    if isinstance(feature, datasets.ClassLabel):
        mapped = [name_to_index(n) for n in feature.names]
        if None not in mapped and sorted(mapped) == list(range(NUM_CLASSES)):
            return np.array(mapped, dtype=np.int64)
    raw = np.asarray(ds.with_format("numpy")["label"]).astype(np.int64)
    if raw.size and (raw.min() < 0 or raw.max() > 6):
        raise DataSourceError(f"labels range over {raw.min()}..{raw.max()}; FER2013 has 7 classes (0..6)")
    return infer_label_permutation(np.bincount(raw, minlength=NUM_CLASSES), signature_split)


def _apply_permutation(ds: datasets.Dataset, perm: np.ndarray) -> datasets.Dataset:
    if not np.array_equal(perm, np.arange(NUM_CLASSES)):
        ds = ds.map(lambda labels: {"label": perm[np.asarray(labels)].tolist()},
                    input_columns=["label"], batched=True, desc="FER2013 label order")
    return ds.cast_column("label", datasets.ClassLabel(names=list(EMOTIONS)))


def _holdout_mask(labels: np.ndarray) -> np.ndarray:
    """Stratified, seeded hold-out of Training for sources without PublicTest."""
    rng = np.random.default_rng(HOLDOUT_SEED)
    mask = np.zeros(len(labels), dtype=bool)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(labels == c)
        take = rng.choice(idx, size=int(round(len(idx) * HOLDOUT_FRACTION)), replace=False)
        mask[take] = True
    return mask


def load_fer2013(split: str, source: str | None = None) -> datasets.Dataset:
    """One FER2013 split as a `datasets.Dataset` with ``image`` and ``label`` (FER2013 order).

    ``split``: ``train`` (Training), ``valid`` (PublicTest), ``test`` (PrivateTest) or
    ``test_full`` (PublicTest + PrivateTest).  ``source``: see the module docstring;
    default :func:`default_source`.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    source = str(source or default_source())
    kind = source_kind(source)
    raw = _load_raw(source, kind)
    names = set(raw.keys())

    if {"train", "valid", "test"} <= names or {"train", "validation", "test"} <= names:
        valid_key = "valid" if "valid" in names else "validation"
        def get(name):
            key = valid_key if name == "valid" else name
            ds = _standard_columns(raw[key], f"{source} [{key}]")
            return _apply_permutation(ds, _label_permutation(ds, name))
        if split == "test_full":
            return datasets.concatenate_datasets([get("valid"), get("test")])
        return get(split)

    if not {"train", "test"} <= names:
        raise DataSourceError(f"{source!r} has splits {sorted(names)}; expected train and test (and optionally valid)")
    log.warning("%s has no PublicTest/PrivateTest split: 'valid' is a 10%% hold-out of train, "
                "'test' is the whole test split", source)
    if split in ("test", "test_full"):
        ds = _standard_columns(raw["test"], f"{source} [test]")
        return _apply_permutation(ds, _label_permutation(ds, "test_full"))
    ds = _standard_columns(raw["train"], f"{source} [train]")
    ds = _apply_permutation(ds, _label_permutation(ds, "train"))
    mask = _holdout_mask(np.asarray(ds.with_format("numpy")["label"]))
    return ds.select(np.flatnonzero(mask if split == "valid" else ~mask))


# --------------------------------------------------------------------------- arrays

def cache_dir() -> Path:
    path = Path(os.environ.get("FERLAB_CACHE", Path.home() / ".cache" / "ferlab"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def to_arrays(ds: datasets.Dataset, size: int = 48, use_cache: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode a split once into ``(images uint8 (N, size, size), labels int64 (N,))``.

    Every image goes through :func:`ferlab.preprocess.to_gray_uint8`, the same function the
    app and the audit use.  The result is cached on disk, keyed by the dataset fingerprint.
    """
    from .preprocess import to_gray_uint8

    path = cache_dir() / "arrays" / f"{ds._fingerprint}_{size}.npz"
    if use_cache and path.exists():
        with np.load(path) as f:
            return f["images"], f["labels"]
    images = np.empty((len(ds), size, size), dtype=np.uint8)
    for i, image in enumerate(_iter_images(ds)):
        images[i] = to_gray_uint8(image, size)
    labels = np.asarray(ds.with_format("numpy")["label"], dtype=np.int64)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, images=images, labels=labels)
        os.replace(tmp, path)  # atomic: a killed run never leaves a half-written cache
    return images, labels


def _iter_images(ds: datasets.Dataset, batch: int = 1024):
    for start in range(0, len(ds), batch):
        yield from ds[start:start + batch]["image"]


def fingerprint(images: np.ndarray, labels: np.ndarray) -> str:
    """Content hash of decoded images and labels (stable across machines and loaders)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return h.hexdigest()[:16]


def ferplus_majority(votes) -> np.ndarray:
    """FER2013-indexed FER+ majority label per row, or -1 where there is none.

    Majority over the seven emotion votes (FER+ contempt, unknown and not-a-face are
    ignored); rows without emotion votes, or whose top count is tied, get -1.
    """
    votes = np.asarray(votes, dtype=np.int64).reshape(-1, 10)[:, :7]
    top = votes.max(axis=1)
    winners = (votes == top[:, None]).sum(axis=1)
    majority = np.asarray(FERPLUS_TO_FER)[votes.argmax(axis=1)]
    return np.where((top > 0) & (winners == 1), majority, -1)


def ferplus_labels(ds: datasets.Dataset) -> np.ndarray:
    """FER+ majority label per row of a split (FER2013 indices), -1 where there is none or where
    the row has no FER+ image of its own (``ferplus_missing``)."""
    if "ferplus_votes" not in ds.column_names:
        raise DataSourceError("this source has no FER+ votes (ferplus_votes); use a copy like ../shared/data/fer2013")
    table = ds.select_columns([c for c in ("ferplus_votes", "ferplus_missing") if c in ds.column_names])
    table = table.with_format("numpy")[:]
    majority = ferplus_majority(table["ferplus_votes"])
    if "ferplus_missing" in table:
        majority[np.asarray(table["ferplus_missing"], dtype=bool)] = -1
    return majority
