"""Convert MediaPipe's short-range BlazeFace (face_detection_short_range.tflite, Apache-2.0) to
ferlab/assets/blazeface.safetensors, and check the port against the tflite on a few pictures.

One-off; needs what ferlab does not: the MediaPipe 0.10.14 wheel (the last that bundles the model
file) and a TFLite interpreter, in a separate virtual environment with torch, safetensors and ferlab's
repository on the path:

    pip download mediapipe==0.10.14 --no-deps -d /tmp/mp && unzip -j /tmp/mp/*.whl \\
        'mediapipe/modules/face_detection/face_detection_short_range.tflite' -d /tmp/bf
    pip install ai-edge-litert torch safetensors numpy opencv-python-headless
    python docs/experiments/face_recall/convert_blazeface.py /tmp/bf/face_detection_short_range.tflite

Also writes tests/data/blazeface_reference.npz: the tflite's outputs on the three pictures of
tests/test_blazeface.py, which compares the port with them.
"""
import sys
from pathlib import Path

import numpy as np
import torch
from ai_edge_litert.interpreter import Interpreter
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from ferlab.blazeface import BlazeFace, to_input  # noqa: E402
from tests.test_blazeface import reference_pictures  # noqa: E402


def main(path: str):
    it = Interpreter(model_path=path)
    it.allocate_tensors()
    tensors = {d["name"]: d["index"] for d in it.get_tensor_details()}

    def get(name):
        return torch.from_numpy(np.asarray(it.get_tensor(tensors[name]), np.float32).copy())

    def conv(name):   # TFLite (O, H, W, I) -> torch (O, I, H, W)
        return get(f"{name}/Kernel").permute(0, 3, 1, 2).contiguous(), get(f"{name}/Bias")

    def depthwise(name):   # TFLite (1, H, W, C) -> torch (C, 1, H, W)
        return get(f"{name}/Kernel").permute(3, 0, 1, 2).contiguous(), get(f"{name}/Bias")

    model = BlazeFace()
    state = {}
    state["stem.weight"], state["stem.bias"] = conv("conv2d")
    for k in range(len(model.blocks)):
        state[f"blocks.{k}.depthwise.weight"], state[f"blocks.{k}.depthwise.bias"] = \
            depthwise("depthwise_conv2d" + (f"_{k}" if k else ""))
        state[f"blocks.{k}.pointwise.weight"], state[f"blocks.{k}.pointwise.bias"] = conv(f"conv2d_{k + 1}")
    for ours, theirs in (("classify8", "classificator_8"), ("classify16", "classificator_16"),
                         ("regress8", "regressor_8"), ("regress16", "regressor_16")):
        state[f"{ours}.weight"], state[f"{ours}.bias"] = conv(theirs)
    model.load_state_dict(state)
    model.eval()
    out = ROOT / "ferlab" / "assets" / "blazeface.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))

    pictures = reference_pictures()
    inp, outs = it.get_input_details()[0]["index"], {d["name"]: d["index"] for d in it.get_output_details()}
    logits, raw = [], []
    for picture in pictures:
        it.set_tensor(inp, (picture.astype(np.float32) / 127.5 - 1.0)[None])
        it.invoke()
        logits.append(it.get_tensor(outs["classificators"])[0, :, 0])
        raw.append(it.get_tensor(outs["regressors"])[0])
    logits, raw = np.stack(logits), np.stack(raw)
    with torch.no_grad():
        ours_logits, ours_raw = model(to_input(pictures))
    print(f"wrote {out} ({out.stat().st_size / 1e3:.0f} kB); largest difference from the tflite: "
          f"logits {np.abs(ours_logits.numpy() - logits).max():.2e}, boxes {np.abs(ours_raw.numpy() - raw).max():.2e}; "
          f"face score on the astronaut {1 / (1 + np.exp(-logits[0].max())):.3f}")
    np.savez_compressed(ROOT / "tests" / "data" / "blazeface_reference.npz", logits=logits, raw=raw)


if __name__ == "__main__":
    main(sys.argv[1])
