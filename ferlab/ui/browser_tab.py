"""Dataset browser: misclassified and suspected-mislabeled test images, with the evidence."""
from __future__ import annotations

import functools
import html
import threading
from dataclasses import dataclass

import cv2
import gradio as gr
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..audit import AuditResult, audit, tune_suspect_threshold, tune_suspect_weights
from ..data import DataSourceError
from ..explain import explain
from ..labels import EMOTIONS
from ..zoo import audit_ensemble
from .common import ModelRegistry, OutputGallery, OutputImage, enlarge, scratch_dir, user_errors

PAGE_SIZE = 48
ALL = "all"
ENSEMBLE = "ensemble (mean of the audit's models)"
VIEWS = ("all", "misclassified", "suspected mislabeled", "correct")
SORTS = ("suspect score", "confidence", "index")
FERPLUS_NAMES = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown",
                 "not a face")


@dataclass
class Scan:
    result: AuditResult
    threshold: float
    suspect: np.ndarray


class AuditStore:
    """Audits computed once per split (probabilities cached on disk by ferlab.audit), kept in memory."""

    def __init__(self, registry: ModelRegistry, source: str | None = None, use_shipped: bool = True):
        self.registry, self.source, self.use_shipped = registry, source, use_shipped
        self._scans: dict[str, Scan] = {}
        self._no_data: DataSourceError | None = None  # said once: later clicks do not wait for it again
        self._lock = threading.Lock()

    def get(self, split: str = "test", progress=None) -> Scan:
        with self._lock:
            if self._no_data is not None:
                raise self._no_data
            if split not in self._scans:
                try:
                    self._scans[split] = self._scan(split, progress)
                except DataSourceError as exc:
                    self._no_data = exc
                    raise
            return self._scans[split]

    def _scan(self, split: str, progress=None) -> Scan:
        """Score PublicTest (to tune the suspect score) and ``split`` with the audit's ensemble,
        reporting per model and per batch of images."""
        def phase(start: float, width: float):
            if progress is None:
                return None
            return lambda fraction, message: progress(start + width * fraction, desc=message)

        # FER2013-trained models only: the suspect score is checked against the FER+ votes, so a
        # model trained on FER+ labels would be grading its own answer key
        models = [self.registry.get(n) for n in audit_ensemble(self.registry.names(labels="fer2013"))]
        if not models:
            raise gr.Error(self.registry.missing_message())
        valid = audit(models, "valid", self.source, progress=False, on_progress=phase(0.0, 0.45),
                      use_shipped=self.use_shipped)  # PublicTest tunes the suspect score
        weights = tune_suspect_weights(valid) if valid.ferplus_votes is not None else valid.weights
        valid.weights = weights
        result = audit(models, split, self.source, progress=False, weights=weights,
                       on_progress=phase(0.5, 0.5), use_shipped=self.use_shipped)
        return Scan(result, tune_suspect_threshold(valid), result.suspect_score)


def _probs(scan: Scan, model: str) -> np.ndarray:
    return scan.result.ensemble if model in (None, "", ENSEMBLE) else scan.result.probabilities[model]


def select_rows(scan: Scan, model: str, true_cls: str, pred_cls: str, view: str, conf_min: float, conf_max: float,
                sort: str) -> np.ndarray:
    """Indices of the images matching the filters, in the chosen order."""
    labels = scan.result.labels
    probs = _probs(scan, model)
    pred, conf = probs.argmax(1), probs.max(1)
    keep = (conf >= conf_min) & (conf <= conf_max)
    if true_cls and true_cls != ALL:
        keep &= labels == EMOTIONS.index(true_cls)
    if pred_cls and pred_cls != ALL:
        keep &= pred == EMOTIONS.index(pred_cls)
    if view == "misclassified":
        keep &= pred != labels
    elif view == "correct":
        keep &= pred == labels
    elif view == "suspected mislabeled":
        keep &= scan.suspect >= scan.threshold
    idx = np.flatnonzero(keep)
    if sort == "suspect score":
        return idx[np.argsort(-scan.suspect[idx], kind="stable")]
    if sort == "confidence":
        return idx[np.argsort(-conf[idx], kind="stable")]
    return idx


def confusion_frame(scan: Scan, model: str) -> pd.DataFrame:
    pred = _probs(scan, model).argmax(1)
    cm = np.zeros((7, 7), int)
    np.add.at(cm, (scan.result.labels, pred), 1)
    frame = pd.DataFrame(cm, columns=[f"→ {e}" for e in EMOTIONS])
    frame.insert(0, "true \\ predicted", list(EMOTIONS))
    return frame


def _gallery(scan: Scan, model: str, indices: np.ndarray, page: int):
    probs = _probs(scan, model)
    pages = max(1, int(np.ceil(len(indices) / PAGE_SIZE)))
    page = int(min(max(1, page), pages))
    shown = indices[(page - 1) * PAGE_SIZE: page * PAGE_SIZE]
    items = [(cv2.resize(scan.result.images[i], (96, 96), interpolation=cv2.INTER_CUBIC),
              f"#{i} {EMOTIONS[scan.result.labels[i]]} → {EMOTIONS[probs[i].argmax()]} ({probs[i].max():.0%})")
             for i in shown]
    return items, page, pages, shown


@user_errors
def browse(store: AuditStore, split: str, model: str, true_cls: str, pred_cls: str, view: str, conf_min: float,
           conf_max: float, sort: str, page: int, progress=gr.Progress()):
    """-> (gallery items, status markdown, confusion frame, shown indices, page)."""
    try:
        scan = store.get(split, progress)
    except DataSourceError as exc:
        return [], no_data_message(exc), None, [], 1
    indices = select_rows(scan, model, true_cls, pred_cls, view, conf_min, conf_max, sort)
    items, page, pages, shown = _gallery(scan, model, indices, page)
    status = (f"**{len(indices)}** of {len(scan.result.labels)} {split} images match · page {page} of {pages} · "
              f"suspected mislabeled = suspect score >= {scan.threshold:.2f} (tuned on PublicTest against FER+)")
    return items, status, confusion_frame(scan, model), shown.tolist(), page


def no_data_message(exc: Exception) -> str:
    """The whole reason, once, with the command that fixes it.  Folder patterns go in code spans
    and the error's own text is escaped: Markdown would take ``<emotion>`` for an HTML tag and drop it."""
    why = html.escape(str(exc))
    return ("**The Dataset browser needs FER2013, and none was found.** Start the lab with a local copy:\n\n"
            "```\nFERLAB_DATA=/path/to/fer2013 make app\n```\n\n"
            "`FERLAB_DATA` is a folder of `train/valid/test.parquet` files (with the FER+ votes for the "
            "label audit), Kaggle-style image folders (`train/<emotion>/*.jpg`, `test/<emotion>/*.jpg`), "
            f"or a Hugging Face dataset id. Every other tab works without it.\n\n*Details:* {why}")


def reason(scan: Scan, i: int) -> str:
    r = scan.result
    label = int(r.labels[i])
    ens = r.ensemble[i]
    top = int(ens.argmax())
    disagree = sum(int(p[i].argmax() != label) for p in r.probabilities.values())
    n = len(r.probabilities)
    text = (f"Labelled **{EMOTIONS[label]}**; the models give that label {ens[label]:.0%} on average and say "
            f"**{EMOTIONS[top]}** ({ens[top]:.0%}); {disagree} of {n} model(s) disagree with the label. "
            f"Suspect score {scan.suspect[i]:.2f} ({'flagged' if scan.suspect[i] >= scan.threshold else 'not flagged'}"
            f", threshold {scan.threshold:.2f}).")
    if r.ferplus_votes is not None:
        votes = r.ferplus_votes[i]
        majority = int(r.ferplus_majority[i])
        best = int(np.argmax(votes))
        text += f" FER+ annotators: {votes[best]} of {votes.sum()} voted {FERPLUS_NAMES[best]}"
        if majority >= 0:
            text += (f", so the FER+ majority {'agrees with' if majority == label else 'overrules'} the FER2013 label.")
        else:
            text += ", with no clear FER+ emotion majority."
    return text


def votes_plot(votes: np.ndarray):
    fig = Figure(figsize=(5.5, 2.6))  # not pyplot: nothing keeps the figure alive after use
    ax = fig.subplots()
    ax.bar(range(10), votes, color="#4c78a8")
    ax.set_xticks(range(10))
    ax.set_xticklabels(FERPLUS_NAMES, rotation=40, ha="right", fontsize=8)
    ax.set(ylabel="votes", title="FER+ annotator votes (10 annotators)")
    fig.tight_layout()
    return fig


@user_errors
def details(store: AuditStore, registry: ModelRegistry, split: str, model: str, shown: list, evt: gr.SelectData):
    """Selected gallery item -> (image, probability table, Grad-CAM predicted, Grad-CAM label, votes plot, reason)."""
    return detail_for(store, registry, split, model, int(shown[evt.index]))


def detail_for(store: AuditStore, registry: ModelRegistry, split: str, model: str, i: int):
    scan = store.get(split)
    r = scan.result
    image = r.images[i]
    table = pd.DataFrame({"model": list(r.probabilities) + ["ensemble"],
                          **{e: [f"{p[i][k]:.0%}" for p in r.probabilities.values()] + [f"{r.ensemble[i][k]:.0%}"]
                             for k, e in enumerate(EMOTIONS)}})
    name = model if model in r.probabilities else (registry.default() or list(r.probabilities)[0])
    clf = registry.get(name)
    pred_e = explain(clf, image, "gradcam")
    label_e = explain(clf, image, "gradcam", target=int(r.labels[i]))
    big = enlarge(cv2.cvtColor(image, cv2.COLOR_GRAY2RGB), 192)
    plot = votes_plot(r.ferplus_votes[i]) if r.ferplus_votes is not None else None
    return (big, table, (pred_e.overlay(big, 0.5), f"{name}: Grad-CAM for predicted {pred_e.target_name}"),
            (label_e.overlay(big, 0.5), f"{name}: Grad-CAM for the label {label_e.target_name}"), plot,
            reason(scan, i))


@user_errors
def export_view(store: AuditStore, split: str, model: str, true_cls: str, pred_cls: str, view: str, conf_min: float,
                conf_max: float, sort: str) -> str:
    scan = store.get(split)
    indices = select_rows(scan, model, true_cls, pred_cls, view, conf_min, conf_max, sort)
    frame = scan.result.to_frame().iloc[indices]
    frame.insert(1, "flagged", scan.suspect[indices] >= scan.threshold)
    path = scratch_dir("export") / f"ferlab-{split}-{view.replace(' ', '_')}.csv"
    frame.to_csv(path, index=False)
    return str(path)


def cell_filter(frame: pd.DataFrame, evt: gr.SelectData):
    """A click on a confusion-matrix cell filters to that (true, predicted) pair."""
    row, col = evt.index
    if col == 0:
        return gr.update(value=EMOTIONS[row]), gr.update(value=ALL)
    return gr.update(value=EMOTIONS[row]), gr.update(value=EMOTIONS[col - 1])


def build(registry: ModelRegistry, models: list[str]):
    store = AuditStore(registry)
    models = [n for n in models if n in registry.names(labels="fer2013")]  # as AuditStore.get
    with gr.Tab("Dataset browser"):
        gr.Markdown("FER2013 has label noise. Browse the models' errors and the images whose **label** is "
                    "probably wrong, ranked by how strongly the models contradict it, checked against the FER+ "
                    "re-annotation. The first scan scores PublicTest and the split with the audit's models (cached "
                    "on disk afterwards); filters then apply at once. Needs FER2013: "
                    "`FERLAB_DATA=/path/to/fer2013 make app`.")
        with gr.Row():
            split = gr.Dropdown(["test", "valid", "test_full"], value="test", label="split")
            model = gr.Dropdown([ENSEMBLE] + models, value=ENSEMBLE, label="model")
            view = gr.Dropdown(list(VIEWS), value="suspected mislabeled", label="view")
            sort = gr.Dropdown(list(SORTS), value="suspect score", label="sort by")
        with gr.Row():
            true_cls = gr.Dropdown([ALL] + list(EMOTIONS), value=ALL, label="true class")
            pred_cls = gr.Dropdown([ALL] + list(EMOTIONS), value=ALL, label="predicted class")
            conf_min = gr.Slider(0, 1, value=0, step=0.05, label="confidence from")
            conf_max = gr.Slider(0, 1, value=1, step=0.05, label="confidence to")
            page = gr.Number(value=1, precision=0, minimum=1, label="page")
        with gr.Row():
            scan_button = gr.Button("Scan / apply filters", variant="primary", elem_id="browser-scan")
            export = gr.Button("Export this view as CSV")
        status = gr.Markdown(elem_id="browser-status")
        confusion = gr.Dataframe(label="confusion matrix (click a cell to filter)", interactive=False)
        gallery = OutputGallery(label="images", columns=8, height=480, elem_id="browser-gallery")
        shown = gr.State([])
        with gr.Row():
            big = OutputImage(label="selected image")
            cam_pred = OutputImage(label="Grad-CAM, predicted class")
            cam_label = OutputImage(label="Grad-CAM, labelled class")
        probs = gr.Dataframe(label="probabilities per model", interactive=False)
        with gr.Row():
            votes = gr.Plot(label="FER+ votes")
            why = gr.Markdown()
        csv_file = gr.File(label="CSV export")

        filters = [split, model, true_cls, pred_cls, view, conf_min, conf_max, sort]
        run = functools.partial(browse, store)
        outputs = [gallery, status, confusion, shown, page]
        scan_button.click(run, filters + [page], outputs, api_name="browse")
        for control in (model, true_cls, pred_cls, view, sort, conf_min, conf_max):
            control.change(lambda *a: run(*a[:-1], 1), filters + [page], outputs)
        page.submit(run, filters + [page], outputs)
        confusion.select(cell_filter, confusion, [true_cls, pred_cls])

        def _detail(split_v, model_v, shown_v, evt: gr.SelectData):
            big_i, table, pred_item, label_item, plot, text = details(store, registry, split_v, model_v, shown_v, evt)
            return big_i, pred_item[0], label_item[0], table, plot, text
        gallery.select(_detail, [split, model, shown], [big, cam_pred, cam_label, probs, votes, why])
        export.click(functools.partial(export_view, store), filters, csv_file, api_name="export_view")
    return store
