"""vit.md, stages 6b and 7: a first look at weight averages of the vit stages on disk (PublicTest).
Each stage's exported run must be in runs/ (train/configs/vit/ writes them).

    python docs/experiments/vit_stage7/first_look.py
"""
import json, torch
from pathlib import Path
from ferlab.data import load_fer2013, to_arrays
from ferlab.checkpoints import load_weights
from ferlab.models import create_model
from ferlab.evaluation import predict_arrays
from ferlab.soup import average_weights
torch.set_num_threads(2)
card = json.loads(Path("runs/vit_stage5/card.json").read_text())
runs = {"3": "runs/vit_stage3", "4": "runs/vit_stage4", "5": "runs/vit_stage5", "6a": "runs/vit_stage6a"}
W = {k: load_weights(Path(v)) for k, v in runs.items()}
x, y = to_arrays(load_fer2013("valid"))
def acc(state):
    m = create_model(card["architecture"], **card["config"]); m.load_state_dict(state); m.eval()
    p = predict_arrays(m, x, card)
    return (p.argmax(1) == y).mean() * 100
def avg(keys):
    return average_weights([W[k] for k in keys])
for k in runs: print(k, f"{acc(W[k]):.2f}", flush=True)
for combo in [("5", "6a"), ("4", "5"), ("4", "5", "6a"), ("3", "4", "5", "6a")]:
    print("+".join(combo), f"{acc(avg(list(combo))):.2f}", flush=True)
