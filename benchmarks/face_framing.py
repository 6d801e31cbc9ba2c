"""How does FER2013 frame its faces?  The crop geometry of ``ferlab.faces.FRAMINGS``, measured.

    python -m benchmarks.face_framing [--n 3000] [--checkpoint ferlab_best] [--detector mtcnn]

1. Derivation (Training split): run each of ferlab's detectors on FER2013 Training images (it upsamples
   a 48x48 image to 240 px and pads it, as it does any small picture) and record where the
   largest box sits in the 48x48 frame.  The median box side and centre offset, in frame units,
   are FER2013's framing: ``align`` cuts that frame around a face found in a photo.
2. Check (PublicTest, never PrivateTest): re-crop every PublicTest image through the detector with
   the measured framing and with looser and tighter ones (the old fixed 25% margin among them),
   and score a model on each.  The framing that matches FER2013 should lose least against the
   model's accuracy on the images as given.

Writes results/face_framing.json (the numbers FRAMINGS must equal) and results/face_framing.md.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np


from benchmarks import ROOT, device_label, report
from ferlab import load_model
from ferlab.data import load_fer2013, to_arrays
from ferlab.evaluation import predict_arrays
from ferlab.faces import FaceDetector, Framing, frame_transform, landmark_transform, warp_crop


def box_positions(images: np.ndarray, detector: FaceDetector) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(found mask, (n_found, 3) box centre dx, dy and side, (n_with_landmarks, 5, 2) landmarks),
    all in units of the frame side."""
    found, rows, marks = np.zeros(len(images), bool), [], []
    for i, img in enumerate(images):
        boxes = detector.detect(img)
        if boxes:
            b, side = boxes[0], img.shape[0]
            cx, cy = b.center
            rows.append((cx / side - 0.5, cy / side - 0.5, max(b.w, b.h) / side))
            if b.landmarks is not None:
                marks.append((np.asarray(b.landmarks) + 0.5) / side)  # pixel indices -> frame units
            found[i] = True
    return found, np.array(rows).reshape(-1, 3), np.array(marks).reshape(-1, 5, 2)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=3000, help="Training images sampled for the derivation")
    parser.add_argument("--checkpoint", default="ferlab_best")
    parser.add_argument("--detector", action="append", choices=["mtcnn", "haar"], help="default: both")
    parser.add_argument("--source")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=str(ROOT / "results" / "face_framing.json"))
    parser.add_argument("--out", default=str(ROOT / "results" / "face_framing.md"))
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    train, _ = to_arrays(load_fer2013("train", args.source), 48)
    pick = np.random.default_rng(args.seed).choice(len(train), min(args.n, len(train)), replace=False)
    model = load_model(args.checkpoint)
    valid, labels = to_arrays(load_fer2013("valid", args.source), 48)
    base_acc = float((predict_arrays(model.module, valid, model.card).argmax(1) == labels).mean())
    record, lines = {}, [f"### Face framing: where FER2013 puts a face ({device_label()})", "",
                         f"Derivation: each detector on {len(pick)} random FER2013 Training images (seed {args.seed}), "
                         "as it runs on any small picture (upsampled to 240 px and padded); the position of the "
                         "largest box in the 48x48 frame, in frame units. A face found in a photo is then cut with a "
                         "square frame of side `box side / median box side`, centred as measured, and turned to "
                         "level the eyes when both are found.", "",
                         f"Check on PublicTest ({model.name}): every image the detector finds a face in, re-cropped "
                         "through the detector with a given framing, scored against the same images as given "
                         f"(all {len(valid)} as given: {100 * base_acc:.2f}%). PrivateTest is not used.", ""]
    for kind in args.detector or ["mtcnn", "haar"]:
        # each detector's own boxes, the best-scored across the passes, as FRAMINGS was measured:
        # BlazeFace's extra faces are boxed by MTCNN's O-Net, so they follow MTCNN's framing
        detector = FaceDetector(kind, blazeface_min_score=None, upright_first=False)
        found, pos, marks = box_positions(train[pick], detector)
        template = np.median(marks, axis=0).round(3) if len(marks) else None
        dx, dy, side = np.median(pos, axis=0)
        q = np.percentile(pos, [25, 75], axis=0)
        measured = Framing(round(float(side), 3), round(float(dx), 3), round(float(dy), 3))
        boxes = [detector.detect(img) for img in valid]
        hit = np.array([bool(b) for b in boxes])
        same = float((predict_arrays(model.module, valid[hit], model.card).argmax(1) == labels[hit]).mean())
        candidates = [("measured", measured), ("old: box + 25% margin", Framing(1 / 1.25, 0.0, 0.0)),
                      ("box + 10%", Framing(1 / 1.10, 0.0, 0.0)), ("box - 10%", Framing(1 / 0.9, 0.0, 0.0))]
        rows = []
        for label, framing in candidates:
            crops = np.stack([warp_crop(img, frame_transform(b[0], 48, 0.0, framing), 48)
                              for img, b in zip(valid, boxes) if b])
            acc = float((predict_arrays(model.module, crops, model.card).argmax(1) == labels[hit]).mean())
            rows.append((label, framing, acc))
        if template is not None:  # the five landmarks mapped onto the measured template
            crops = np.stack([warp_crop(img, landmark_transform(b[0].landmarks, 48, template), 48)
                              if b[0].landmarks is not None else
                              warp_crop(img, frame_transform(b[0], 48, 0.0, measured), 48)
                              for img, b in zip(valid, boxes) if b])
            acc = float((predict_arrays(model.module, crops, model.card).argmax(1) == labels[hit]).mean())
            rows.append(("measured landmarks (similarity fit)", measured, acc))
        record[kind] = {"box_side": measured.box_side, "center_dx": measured.center_dx,
                        "center_dy": measured.center_dy,
                        "landmarks": None if template is None else template.tolist(),
                        "train_images": int(len(pick)), "found": int(found.sum()),
                        "quartiles": {"center_dx": q[:, 0].round(3).tolist(), "center_dy": q[:, 1].round(3).tolist(),
                                      "box_side": q[:, 2].round(3).tolist()},
                        "valid": {"checkpoint": model.name, "found": int(hit.sum()), "n": int(len(valid)),
                                  "accuracy_as_given_found": same, "recropped": {lb: a for lb, _, a in rows}}}
        lines += [f"#### {kind}: found a face in {found.sum()} of {len(pick)} Training images ({found.mean():.0%})", "",
                  "| box position | median | 25th pct | 75th pct |", "|---|---|---|---|",
                  f"| box side / frame side | {side:.3f} | {q[0, 2]:.3f} | {q[1, 2]:.3f} |",
                  f"| box centre x - frame centre | {dx:+.3f} | {q[0, 0]:+.3f} | {q[1, 0]:+.3f} |",
                  f"| box centre y - frame centre | {dy:+.3f} | {q[0, 1]:+.3f} | {q[1, 1]:+.3f} |", "",
                  ]
        if template is not None:
            names = ("left eye", "right eye", "nose", "left mouth corner", "right mouth corner")
            lines += ["Landmarks in the frame (median, frame units): " + "; ".join(
                f"{n} ({x:.3f}, {y:.3f})" for n, (x, y) in zip(names, template)) + ".", ""]
        lines += [f"PublicTest: {hit.sum()} of {len(valid)} faces found; as given {100 * same:.2f}%.", "",
                  "| framing | crop side / box side | accuracy | vs as given |", "|---|---|---|---|"]
        lines += [f"| {label} | {1 / f.box_side:.3f} | {100 * acc:.2f}% | {100 * (acc - same):+.2f} pt |"
                  if "landmarks" not in label else f"| {label} | - | {100 * acc:.2f}% | {100 * (acc - same):+.2f} pt |"
                  for label, f, acc in rows]
        lines.append("")
    lines[0] += f" ({time.perf_counter() - t0:.0f} s)"
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    report("\n".join(lines), args.out)


if __name__ == "__main__":
    main()
