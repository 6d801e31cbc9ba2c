"""int8 with error-compensating rounding (GPTQ, ferlab.quantization.gptq_int8) against the shipped
nearest rounding, in the same file format (int8 codes, one scale = max|w| / 127 per output channel).
GPTQ calibrates on 1,024 Training images (a fixed random subset, no labels). PublicTest accuracy and
the predictions that change against the float32 weights.
Run from the repository root:
PYTHONPATH=. python docs/experiments/vgg19_scratch/int8_gptq.py [float32 weights]"""
import sys
import time
import numpy as np, torch
from safetensors.torch import load_file
from ferlab import load_model
from ferlab.checkpoints import dequantize_int8, stored
from ferlab.evaluation import predict_arrays
from ferlab.quantization import calibration_images, gptq_int8
from ferlab.training import load_split

torch.set_num_threads(2)
m = load_model("vgg19")
module, card = m.module, m.card
f32 = load_file(sys.argv[1] if len(sys.argv) > 1 else "runs/vgg19/best/model.safetensors")
x, y = load_split("valid", None, 48)
train_x, _ = load_split("train", None, 48)


def predictions(state):
    module.load_state_dict(state)
    return predict_arrays(module, x, card).argmax(1)


reference = predictions(f32)
print(f"float32: {np.mean(reference == y):.2%}", flush=True)
nearest = predictions(stored(f32, "int8"))
print(f"int8 nearest: {np.mean(nearest == y):.2%}, {np.sum(nearest != reference)} predictions changed",
      flush=True)
module.load_state_dict(f32)
t0 = time.time()
encoded = gptq_int8(module, calibration_images(train_x), card)
seconds = time.time() - t0
gptq = predictions(dequantize_int8(encoded))
print(f"int8 gptq: {np.mean(gptq == y):.2%}, {np.sum(gptq != reference)} predictions changed "
      f"({seconds:.0f} s to calibrate)", flush=True)
