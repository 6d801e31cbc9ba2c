"""Explanation latency on the CPU, and ferlab's Grad-CAM beside pytorch-grad-cam's, in one run.

    python -m benchmarks.explain_speed [--models cnn resnet_se] [--repeats 50] [--out results/explain_speed.md]

For each model: p50 / p95 latency of one 48x48 image through ``explain`` (gradcam,
guided_gradcam, integrated_gradients; for transformers rollout and attention_gradcam instead of
guided_gradcam) and ``explain_layers`` (Grad-CAM at every layer), and,
interleaved call by call on the same model, layer and image, pytorch-grad-cam's ``GradCAM`` (for a
transformer with a ``reshape_transform`` that lays the tokens on their grid, as ferlab does):
the time ratio ferlab / theirs.  Their agreement is checked on one image per class (the first of
each in PrivateTest), each for its predicted class: the lowest heatmap correlation after the same
min-max normalization, over the images where both maps have positive evidence.  Grad-CAM keeps
only positive evidence, so a map can be empty (nothing at that layer speaks for the class): an
image empty in both counts as agreement and is reported, one empty in just one of them as a
disagreement (correlation 0).
Models come from checkpoints/; a name with no checkpoint is built untrained (and marked so).
"""
import argparse
import time

import numpy as np
import torch

from benchmarks import device_label, report

from ferlab import list_models, load_model
from ferlab.checkpoints import FERClassifier, base_card
from ferlab.explain import explain, explain_layers
from ferlab.models import create_model


def get_model(name):
    if name in list_models():
        return load_model(name, device="cpu"), "trained"
    module = create_model(name).eval().to(memory_format=torch.channels_last)
    card = base_card(module, [0.5] * module.in_channels, [0.5] * module.in_channels)
    return FERClassifier(name=name, module=module, card=card, device=torch.device("cpu")), "untrained"


def sample_images():
    """One image per class (index 3, happy, is the timed one) and where they come from."""
    try:
        from ferlab.data import load_fer2013, to_arrays
        images, labels = to_arrays(load_fer2013("test"))
        return [images[int(np.flatnonzero(labels == c)[0])] for c in range(7)], "PrivateTest"
    except Exception as exc:  # no data here: generated faces
        from tests.synthetic import face
        rng = np.random.default_rng(0)
        return [face(c, rng) for c in range(7)], f"generated ({type(exc).__name__})"


def heatmap_agreement(model, cam, images):
    """(lowest correlation over images where both maps are non-empty, images empty in both) for
    ferlab's and pytorch-grad-cam's Grad-CAM, each image explained for its predicted class."""
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    corrs, both_empty = [], 0
    for image in images:
        ours = explain(model, image, "gradcam")
        theirs = cam(input_tensor=model.preprocess([image]), targets=[ClassifierOutputTarget(ours.target)])[0]
        empty = (ours.heatmap.max() <= 0, theirs.max() <= 0)
        if all(empty):
            both_empty += 1
        elif any(empty):
            corrs.append(0.0)
        else:
            corrs.append(float(np.corrcoef(minmax(ours.heatmap).ravel(), minmax(theirs).ravel())[0, 1]))
    return (min(corrs) if corrs else float("nan")), both_empty


def timed(fn, repeats, warmup=5):
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return np.array(out) * 1000


def minmax(a):
    a = a - a.min()
    return a / (a.max() + 1e-7)


def bench_model(name, images, repeats):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, status = get_model(name)
    module, layer = model.module, model.module.default_layer
    image = images[3]
    target = explain(model, image).target
    x = model.preprocess([image])
    # a transformer's tokens reach pytorch-grad-cam through the same reshape ferlab uses (class token dropped)
    cam = GradCAM(model=module, target_layers=[module.get_layer(layer)],
                  reshape_transform=module.feature_map if module.tokens else None)
    theirs_fn = lambda: cam(input_tensor=x, targets=[ClassifierOutputTarget(target)])  # noqa: E731
    ours_fn = lambda: explain(model, image, "gradcam")  # noqa: E731  (default target = predicted, as theirs)
    for _ in range(5):
        ours_fn(), theirs_fn()
    ours_t, theirs_t = [], []
    for _ in range(repeats):  # interleaved, so both see the same machine state
        t = time.perf_counter()
        ours_fn()
        ours_t.append(time.perf_counter() - t)
        t = time.perf_counter()
        theirs_fn()
        theirs_t.append(time.perf_counter() - t)
    ours_t, theirs_t = np.array(ours_t) * 1000, np.array(theirs_t) * 1000
    corr, both_empty = heatmap_agreement(model, cam, images)
    cam.activations_and_grads.release()
    row = {"model": f"{name} ({status})", "layer": layer, "gradcam": ours_t, "pytorch-grad-cam": theirs_t,
           "explain_layers": timed(lambda: explain_layers(model, image, "gradcam"), repeats),
           "guided_gradcam": (None if module.tokens else  # needs conv maps: not offered for transformers
                              timed(lambda: explain(model, image, "guided_gradcam"), repeats)),
           "rollout": timed(lambda: explain(model, image, "rollout"), repeats) if module.tokens else None,
           "attention_gradcam": (timed(lambda: explain(model, image, "attention_gradcam"), repeats)
                                 if module.tokens else None),
           "integrated_gradients": timed(lambda: explain(model, image, "integrated_gradients"),
                                         max(5, repeats // 5)),
           "corr": corr, "both_empty": both_empty, "ratio": float(np.median(ours_t) / np.median(theirs_t)),
           "n_layers": len(module.explainable_layers)}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="default: every checkpoint, else cnn resnet_se")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    names = args.models or list_models() or ["cnn", "resnet_se"]
    images, where = sample_images()
    p = lambda a: "—" if a is None else f"{np.percentile(a, 50):.1f} / {np.percentile(a, 95):.1f}"  # noqa: E731
    lines = [f"{device_label()}, torch {torch.__version__}; times: one 48x48 image (the first "
             f"'happy' image, {where}), p50 / p95 in ms over {args.repeats} calls (integrated gradients: "
             f"{max(5, args.repeats // 5)}, 32 steps); heatmap agreement: the first image of each class ({where}), "
             "each for its predicted class, lowest correlation over those with evidence in both maps",
             "", "| model | Grad-CAM layer | ferlab Grad-CAM | pytorch-grad-cam GradCAM | time ratio ferlab/theirs "
             "| heatmap corr. (min of 7) | all layers (explain_layers) | guided Grad-CAM | integrated gradients "
             "| attention rollout | gradient-weighted attention |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = bench_model(name, images, args.repeats)
        agreement = f"{r['corr']:.4f}" + (f" ({r['both_empty']} empty in both)" if r["both_empty"] else "")
        lines.append(f"| {r['model']} | {r['layer']} | {p(r['gradcam'])} | {p(r['pytorch-grad-cam'])} | "
                     f"{r['ratio']:.2f} | {agreement} | {p(r['explain_layers'])} ({r['n_layers']} layers) | "
                     f"{p(r['guided_gradcam'])} | {p(r['integrated_gradients'])} | {p(r['rollout'])} | "
                     f"{p(r['attention_gradcam'])} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print()
    report(text, args.out)


if __name__ == "__main__":
    main()
