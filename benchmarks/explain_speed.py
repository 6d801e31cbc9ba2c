"""Explanation latency on the CPU, and ferlab's Grad-CAM beside pytorch-grad-cam's, in one run.

    python benchmarks/explain_speed.py [--models cnn resnet_se] [--repeats 50] [--out results/explain_speed.md]

For each model: p50 / p95 latency of one 48x48 image through ``explain`` (gradcam,
guided_gradcam, integrated_gradients) and ``explain_layers`` (Grad-CAM at every layer), and,
interleaved call by call on the same model, layer and image, pytorch-grad-cam's ``GradCAM``:
the heatmap correlation after the same min-max normalization and the time ratio ferlab / theirs.
Models come from checkpoints/; a name with no checkpoint is built untrained (and marked so).
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks import report  # noqa: E402

from ferlab import list_models, load_model  # noqa: E402
from ferlab.checkpoints import FERClassifier, base_card  # noqa: E402
from ferlab.explain import explain, explain_layers  # noqa: E402
from ferlab.models import create_model  # noqa: E402


def get_model(name):
    if name in list_models():
        return load_model(name, device="cpu"), "trained"
    module = create_model(name).eval().to(memory_format=torch.channels_last)
    card = base_card(module, [0.5] * module.in_channels, [0.5] * module.in_channels)
    return FERClassifier(name=name, module=module, card=card, device=torch.device("cpu")), "untrained"


def sample_image():
    try:
        from ferlab.data import load_fer2013, to_arrays
        images, labels = to_arrays(load_fer2013("test"))
        return images[int(np.flatnonzero(labels == 3)[0])], "first 'happy' PrivateTest image"
    except Exception as exc:  # no data here: a generated face
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from synthetic import face
        return face(3, np.random.default_rng(0)), f"generated face ({type(exc).__name__})"


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


def bench_model(name, image, repeats):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, status = get_model(name)
    module, layer = model.module, model.module.default_layer
    target = explain(model, image).target
    x = model.preprocess(image)
    cam = GradCAM(model=module, target_layers=[module.get_layer(layer)])
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
    ours_map = explain(model, image, "gradcam", target=target).heatmap
    their_map = theirs_fn()[0]
    corr = float(np.corrcoef(minmax(ours_map).ravel(), minmax(their_map).ravel())[0, 1]) \
        if ours_map.max() > 0 and their_map.max() > 0 else float("nan")
    cam.activations_and_grads.release()
    row = {"model": f"{name} ({status})", "layer": layer, "gradcam": ours_t, "pytorch-grad-cam": theirs_t,
           "explain_layers": timed(lambda: explain_layers(model, image, "gradcam"), repeats),
           "guided_gradcam": timed(lambda: explain(model, image, "guided_gradcam"), repeats),
           "integrated_gradients": timed(lambda: explain(model, image, "integrated_gradients"),
                                         max(5, repeats // 5)),
           "corr": corr, "ratio": float(np.median(ours_t) / np.median(theirs_t)),
           "n_layers": len(module.explainable_layers)}
    return row


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="*", default=None, help="default: every checkpoint, else cnn resnet_se")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    names = args.models or list_models() or ["cnn", "resnet_se"]
    image, where = sample_image()
    p = lambda a: f"{np.percentile(a, 50):.1f} / {np.percentile(a, 95):.1f}"  # noqa: E731
    lines = [f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}; one 48x48 image ({where}); "
             f"p50 / p95 in ms over {args.repeats} calls (integrated gradients: {max(5, args.repeats // 5)}, 32 steps)",
             "", "| model | Grad-CAM layer | ferlab Grad-CAM | pytorch-grad-cam GradCAM | time ratio ferlab/theirs "
             "| heatmap corr. | all layers (explain_layers) | guided Grad-CAM | integrated gradients |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        r = bench_model(name, image, args.repeats)
        lines.append(f"| {r['model']} | {r['layer']} | {p(r['gradcam'])} | {p(r['pytorch-grad-cam'])} | "
                     f"{r['ratio']:.2f} | {r['corr']:.4f} | {p(r['explain_layers'])} ({r['n_layers']} layers) | "
                     f"{p(r['guided_gradcam'])} | {p(r['integrated_gradients'])} |")
        print(lines[-1], flush=True)
    text = "\n".join(lines) + "\n"
    print()
    report(text, args.out)


if __name__ == "__main__":
    main()
