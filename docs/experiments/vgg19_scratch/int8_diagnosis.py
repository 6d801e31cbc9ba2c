"""Where does int8 cost vgg19 accuracy?  PublicTest, a run's float32 best weights against int8
with some layers kept in float32.  The committed table used epoch 8's weights, which were then in
the uncommitted run folder's best/; that folder now holds a later epoch, so re-running measures that.
Run from the repository root:
PYTHONPATH=. python docs/experiments/vgg19_scratch/int8_diagnosis.py [runs/vgg19/best/model.safetensors]"""
import sys
import numpy as np, torch
from ferlab import load_model
from ferlab.checkpoints import stored
from ferlab.evaluation import predict_arrays
from ferlab.training import load_split
torch.set_num_threads(2)
m = load_model("vgg19")
from safetensors.torch import load_file
m.module.load_state_dict(load_file(sys.argv[1] if len(sys.argv) > 1 else "runs/vgg19/best/model.safetensors"))
x, y = load_split("valid", None, 48)
f32 = {k: v.detach().clone() for k, v in m.module.state_dict().items()}
def run(state):
    m.module.load_state_dict(state)
    return predict_arrays(m.module, x, m.card)
def int8_except(keep):
    return {**f32, **stored({k: v for k, v in f32.items() if not k.startswith(tuple(keep))}, "int8")}
base = run(f32); pb = base.argmax(1)
print(f"float32 acc {np.mean(pb == y):.4%}", flush=True)
for keep in ([], ["features.0."], ["classifier."], ["features.0.", "classifier."]):
    p = run(int8_except(keep)); pq = p.argmax(1)
    ch = pq != pb
    print(f"int8 except {keep}: acc {np.mean(pq == y):.4%} changed {ch.sum()} (right->wrong {((pb==y)&ch).sum()}, wrong->right {((pq==y)&ch).sum()}), max dp {np.abs(p-base).max():.4f}", flush=True)
for k, v in f32.items():
    if v.is_floating_point() and v.dim() >= 2:
        d = stored({k: v}, "int8")[k]
        print(f"  {k} {tuple(v.shape)} rel err {((d - v).norm() / v.norm()).item():.4f}")
