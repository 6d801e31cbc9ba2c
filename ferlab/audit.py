"""Audit a split: every model's probabilities per image, the images the models get wrong, and
the images whose *label* is probably wrong.

    python -m ferlab.audit --checkpoint ferlab_best [--checkpoint resnet_se] [--split test] [--source SRC] --out audit.csv
    python -m ferlab.audit --checkpoint ferlab_photo --images my_photos/ --out scores.csv  # a folder: one row per face

Probabilities are cached on disk per (checkpoint weights hash, dataset content fingerprint),
written atomically: a killed run never leaves a corrupt cache.

Suspected mislabels are ranked by a *suspect score* built from out-of-sample ensemble
probabilities: low self-confidence in the given label, a negative normalized margin (another
class beats the label), and the share of models that disagree with the label.  The weights of
the three terms are chosen on PublicTest (``valid``) against the FER+ re-annotation
(:func:`tune_suspect_weights`); PrivateTest is only used to report.

Ground truth for "the FER2013 label is wrong": the FER+ majority of the seven emotion votes
(``ferlab.data.ferplus_majority``) differs from the FER2013 label.  Rows with no FER+ majority
(all votes contempt / unknown / not-a-face, or a tied maximum) and rows without their own FER+
image (``ferplus_missing``) are left out of the evaluation.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .checkpoints import FERClassifier, WEIGHTS_FILE, load_model
from .data import cache_dir, ferplus_labels, fingerprint, load_fer2013, to_arrays
from .evaluation import predict_arrays
from .labels import EMOTIONS

DEFAULT_WEIGHTS = (1.0, 1.0, 1.0)  # self-confidence, margin, disagreement; see tune_suspect_weights


def weights_hash(model: FERClassifier) -> str:
    h = hashlib.sha256()
    if model.path is not None and (model.path / WEIGHTS_FILE).is_file():
        with open(model.path / WEIGHTS_FILE, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    else:  # an in-memory model: hash its tensors
        for k, v in sorted(model.module.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _atomic_save(path: Path, **arrays) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the whole new one


def _load_cached(path: Path, n: int):
    try:
        with np.load(path) as f:
            probs = f["probabilities"]
        if probs.shape == (n, len(EMOTIONS)) and np.isfinite(probs).all():
            return probs
    except Exception:  # unreadable: recompute and overwrite
        pass
    return None


SHIPPED_AUDIT = "audit"  # checkpoints/<name>/audit/<weights hash>_<data fingerprint>.npz


def shipped_probabilities_path(model: FERClassifier, data_fp: str) -> Path | None:
    """Where a checkpoint keeps its own probabilities on a dataset (``--ship`` writes them): the
    Dataset browser's first scan of FER2013 then reads them instead of running the model.  Keyed
    by the weights' hash and the images' fingerprint, so other weights or other data never match."""
    if model.path is None:
        return None
    return model.path / SHIPPED_AUDIT / f"{weights_hash(model)}_{data_fp}.npz"


def cached_probabilities(model: FERClassifier, images: np.ndarray, data_fp: str, use_cache: bool = True,
                         progress: bool = False, on_batch=None, use_shipped: bool = True,
                         ship: bool = False) -> np.ndarray:
    """``model``'s probabilities on ``images`` (fingerprint ``data_fp``): from the user's cache, else
    from those shipped beside the checkpoint, else computed and cached.  ``ship`` also stores them
    beside the checkpoint (``shipped_probabilities_path``)."""
    path = cache_dir() / "audit" / f"{model.name}_{weights_hash(model)}_{data_fp}.npz"
    shipped = shipped_probabilities_path(model, data_fp)
    if ship and shipped is None:
        raise ValueError(f"{model.name} was not loaded from a checkpoint folder: nowhere to ship its probabilities")
    probs = None
    if use_cache:
        for candidate in (path, shipped if use_shipped else None):
            if candidate is not None and candidate.exists():
                probs = _load_cached(candidate, len(images))
                if probs is not None:
                    break
    if probs is None:
        probs = predict_arrays(model.module, images, model.card, model.device, progress=progress,
                               on_batch=on_batch)
        if use_cache:
            _atomic_save(path, probabilities=probs.astype(np.float32))
    if ship:
        shipped.parent.mkdir(exist_ok=True)
        _atomic_save(shipped, probabilities=probs.astype(np.float32))
    return probs


def suspect_components(labels: np.ndarray, probabilities: dict[str, np.ndarray]) -> np.ndarray:
    """(N, 3): 1 - ensemble self-confidence, -normalized margin, share of models disagreeing."""
    stack = np.stack(list(probabilities.values()))         # (M, N, 7)
    mean = stack.mean(axis=0)
    rows = np.arange(len(labels))
    self_conf = mean[rows, labels]
    others = mean.copy()
    others[rows, labels] = -np.inf
    margin = self_conf - others.max(axis=1)                 # in [-1, 1]; < 0: another class wins
    disagree = (stack.argmax(axis=2) != labels[None]).mean(axis=0)
    return np.stack([1.0 - self_conf, -margin, disagree], axis=1)


def suspect_scores(labels, probabilities, weights=DEFAULT_WEIGHTS) -> np.ndarray:
    comps = suspect_components(np.asarray(labels), probabilities)
    # a sliver of (1 - self-confidence) breaks the ties of the coarse terms (disagreement is k/M)
    return comps @ np.asarray(weights, dtype=np.float64) + 1e-3 * comps[:, 0]


@dataclass
class AuditResult:
    split: str
    source: str
    labels: np.ndarray
    probabilities: dict[str, np.ndarray]
    images: np.ndarray = field(repr=False)
    ferplus_votes: np.ndarray | None = field(default=None, repr=False)
    ferplus_majority: np.ndarray | None = field(default=None, repr=False)   # -1: none (see ferplus_labels)
    weights: tuple = DEFAULT_WEIGHTS

    @property
    def ensemble(self) -> np.ndarray:
        return np.mean(np.stack(list(self.probabilities.values())), axis=0)

    @property
    def suspect_score(self) -> np.ndarray:
        return suspect_scores(self.labels, self.probabilities, self.weights)

    def ferplus_wrong(self) -> tuple[np.ndarray, np.ndarray]:
        """``(label_is_wrong, evaluable)`` per row from the FER+ votes (see the module docstring)."""
        if self.ferplus_majority is None:
            raise ValueError("this source has no FER+ votes")
        evaluable = self.ferplus_majority >= 0
        return (self.ferplus_majority != self.labels) & evaluable, evaluable

    def to_frame(self):
        import pandas as pd
        ens = self.ensemble
        pred = ens.argmax(1)
        frame = pd.DataFrame({"index": np.arange(len(self.labels)),
                              "true_label": [EMOTIONS[i] for i in self.labels],
                              "prediction": [EMOTIONS[i] for i in pred],
                              "correct": pred == self.labels,
                              "confidence": ens.max(1),
                              "suspect_score": self.suspect_score})
        for name, probs in self.probabilities.items():
            for k, emotion in enumerate(EMOTIONS):
                frame[f"p_{name}_{emotion}"] = probs[:, k]
            frame[f"pred_{name}"] = [EMOTIONS[i] for i in probs.argmax(1)]
        if self.ferplus_majority is not None:
            frame["ferplus_majority"] = [EMOTIONS[m] if m >= 0 else "" for m in self.ferplus_majority]
        return frame


def _as_models(models) -> list[FERClassifier]:
    if isinstance(models, (str, FERClassifier)):
        models = [models]
    return [m if isinstance(m, FERClassifier) else load_model(m) for m in models]


def audit(models, split: str = "test", source: str | None = None, use_cache: bool = True, progress: bool = True,
          weights=DEFAULT_WEIGHTS, on_progress=None, use_shipped: bool = True, ship: bool = False) -> AuditResult:
    """Run one or more checkpoints over a split; probabilities cached on disk (and read from those
    shipped beside a checkpoint, unless ``use_shipped`` is False; ``ship`` writes them there).
    ``on_progress(fraction, message)`` is called as the split is read and after each model's
    batches (a UI's progress bar)."""
    def say(fraction: float, message: str) -> None:
        if on_progress is not None:
            on_progress(min(max(fraction, 0.0), 1.0), message)

    models = _as_models(models)
    say(0.0, f"reading {split}")
    ds = load_fer2013(split, source)
    base_images, labels = to_arrays(ds, 48)
    data_fp = fingerprint(base_images, labels)
    probabilities = {}
    for k, m in enumerate(models):
        size = int(m.card.get("input_size", 48))
        images = base_images if size == 48 else to_arrays(ds, size)[0]
        say(k / len(models), f"{m.name}: scoring {len(images)} {split} images")

        def batch_done(done, k=k, m=m, n=len(images)):
            say((k + done / n) / len(models), f"{m.name}: {done} of {n} {split} images")
        probabilities[m.name] = cached_probabilities(m, images, f"{data_fp}_{size}", use_cache, progress,
                                                     on_batch=batch_done, use_shipped=use_shipped, ship=ship)
    say(1.0, f"{split}: {len(models)} model(s) scored")
    votes = majority = None
    if "ferplus_votes" in ds.column_names:
        votes = np.asarray(ds.select_columns(["ferplus_votes"]).with_format("numpy")[:]["ferplus_votes"],
                           dtype=np.int64).reshape(-1, 10)
        majority = ferplus_labels(ds)
    return AuditResult(split=split, source=str(source), labels=labels, probabilities=probabilities,
                       images=base_images, ferplus_votes=votes, ferplus_majority=majority, weights=tuple(weights))


# --------------------------------------------------------------------------- evaluation of rankings

def ranking_metrics(scores: np.ndarray, wrong: np.ndarray, evaluable: np.ndarray, ks=(50, 100, 200)) -> dict:
    """Precision@k, recall@max(k) and AUROC of ranking ``scores`` (high = suspect) among evaluable rows."""
    s, y = np.asarray(scores)[evaluable], np.asarray(wrong)[evaluable].astype(bool)
    order = np.argsort(-s, kind="stable")
    out = {f"precision@{k}": float(y[order[:k]].mean()) for k in ks}
    out[f"recall@{max(ks)}"] = float(y[order[:max(ks)]].sum() / max(y.sum(), 1))
    out["auroc"] = auroc(s, y)
    out["base_rate"] = float(y.mean())
    out["n"] = int(len(y))
    return out


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUROC with ties counted half."""
    from scipy.stats import rankdata
    pos = positive.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tune_suspect_weights(valid: AuditResult, grid=(0.0, 0.5, 1.0, 2.0)) -> tuple:
    """The weights (self-confidence, margin, disagreement) with the best precision@100 on ``valid``
    (AUROC breaks ties), searched on a small grid.  Never called on ``test``."""
    if valid.split == "test" or valid.split == "test_full":
        raise ValueError("tune on valid (PublicTest), never on the test split")
    wrong, evaluable = valid.ferplus_wrong()
    best, best_key = DEFAULT_WEIGHTS, (-1.0, -1.0)
    for a in grid:
        for b in grid:
            for c in grid:
                if a == b == c == 0:
                    continue
                m = ranking_metrics(suspect_scores(valid.labels, valid.probabilities, (a, b, c)), wrong, evaluable)
                key = (m["precision@100"], m["auroc"])
                if key > best_key:
                    best, best_key = (a, b, c), key
    return best


def tune_suspect_threshold(valid: AuditResult, min_precision: float = 0.8, fallback_share: float = 0.05) -> float:
    """Suspect-score threshold for the "suspected mislabeled" view: the lowest score down to which
    the ranking on ``valid`` keeps FER+ precision >= ``min_precision`` (without FER+ votes: the
    top ``fallback_share`` of ``valid``)."""
    scores = valid.suspect_score
    if valid.ferplus_votes is None:
        return float(np.quantile(scores, 1 - fallback_share))
    wrong, evaluable = valid.ferplus_wrong()
    s, y = scores[evaluable], wrong[evaluable]
    best = None
    for value in np.unique(s)[::-1]:  # every possible cut, tied scores kept together
        chosen = s >= value
        if chosen.sum() >= 20 and y[chosen].mean() >= min_precision:  # 20: one lucky image does not set it
            best = value
    return float(best) if best is not None else float(np.quantile(scores, 1 - fallback_share))


# --------------------------------------------------------------------------- CLI

def score_folder(model: FERClassifier, folder: Path, detect: bool = True, fallback: bool = False):
    """One row per face for every image file in a folder, through ``ferlab.analyze``'s pipeline
    (``detect=False``: each file is a face crop already).  A file with no face, or unreadable, gets
    one row whose ``error`` says so."""
    import pandas as pd
    from .pipeline import analyze
    from .preprocess import InputError
    rows = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        name = str(path.relative_to(folder))
        try:
            faces = analyze(path.read_bytes(), model, detect=detect, fallback=fallback)
        except InputError as exc:
            rows.append({"file": name, "error": str(exc)})
            continue
        if not faces:
            rows.append({"file": name, "error": "no face found (--fallback classifies the centre square)"})
        for i, face in enumerate(faces):
            row = {"file": name, "face": i, "x": face.box.x, "y": face.box.y, "w": face.box.w, "h": face.box.h,
                   "detected": face.detected, "prediction": face.emotion, "confidence": face.confidence, "error": ""}
            row.update({f"p_{e}": float(p) for e, p in zip(EMOTIONS, face.probabilities)})
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m ferlab.audit", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", required=True, help="checkpoint name or folder (repeatable)")
    parser.add_argument("--split", default="test", choices=["train", "valid", "test", "test_full"])
    parser.add_argument("--source", help="data source (default: FERLAB_DATA, the local copy, or the Hub)")
    parser.add_argument("--images", help="score a plain folder of images instead (no labels): one row per face")
    parser.add_argument("--crops", action="store_true", help="with --images: each file is a face crop, no detection")
    parser.add_argument("--fallback", action="store_true",
                        help="with --images: classify the centre square of a picture with no face found")
    parser.add_argument("--out", required=True, help="CSV file to write")
    parser.add_argument("--no-cache", action="store_true")
    parser.add_argument("--ship", action="store_true",
                        help="also store each checkpoint's probabilities on this split beside its weights "
                             "(checkpoints/<name>/audit/), for the Dataset browser's first scan")
    args = parser.parse_args(argv)
    if args.images:
        frame = score_folder(load_model(args.checkpoint[0]), Path(args.images), detect=not args.crops,
                             fallback=args.fallback)
    else:
        frame = audit(args.checkpoint, args.split, args.source, use_cache=not args.no_cache, ship=args.ship).to_frame()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(args.out, index=False)
    print(f"wrote {len(frame)} rows to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
