"""Would float16 for part of vgg19 buy back what int8 costs, within the 25 MB limit?  PublicTest,
a run's float32 best weights: int8 with one conv at a time kept in float32, then groups of convs in
float16 (each float16 parameter costs one byte more than int8; the int8 file is 19.4 MB).
The committed table used epoch 43's weights (then in the uncommitted run folder's best/).
Run from the repository root:
PYTHONPATH=. python docs/experiments/vgg19_scratch/int8_mixed.py [runs/vgg19/best/model.safetensors]"""
import sys
import numpy as np, torch
from safetensors.torch import load_file
from ferlab import load_model
from ferlab.checkpoints import stored
from ferlab.evaluation import predict_arrays
from ferlab.training import load_split
torch.set_num_threads(2)
m = load_model("vgg19")
f32 = load_file(sys.argv[1] if len(sys.argv) > 1 else "runs/vgg19/best/model.safetensors")
x, y = load_split("valid", None, 48)
def acc(state):
    m.module.load_state_dict(state)
    return np.mean(predict_arrays(m.module, x, m.card).argmax(1) == y)
q, h = stored(f32, "int8"), stored(f32, "float16")
print(f"float32 {acc(f32):.2%}, int8 {acc(q):.2%}", flush=True)
convs = [k for k, v in f32.items() if k.startswith("features.") and k.endswith(".weight") and v.dim() == 4]
for k in convs:
    print(f"{k} ({f32[k].numel() / 1e6:.2f} M) kept in float32: {acc({**q, k: f32[k]}):.2%}", flush=True)
small = [k for k in convs if f32[k].numel() < 2e6]
big = [k for k in convs if f32[k].numel() >= 2e6]
for group in (small, big[:4], big[4:]):
    extra = sum(f32[k].numel() for k in group) / 1e6
    print(f"{[k.split('.')[1] for k in group]} in float16 (+{extra:.2f} MB): {acc({**q, **{k: h[k] for k in group}}):.2%}",
          flush=True)
