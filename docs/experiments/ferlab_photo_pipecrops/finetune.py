"""Fine-tune ferlab_photo on what the pipeline really hands it: Training faces either clean (the
``photo`` augmentation, as ferlab_photo was trained) or, where make_crops.py cut one, the pipeline's
crop of the face pasted into a scene.  Targets: offline teachers (ferlab_photo, ferlab_best,
resnet_se, flip TTA) on the *clean* image, 0.7 x KL at T = 2 + 0.3 x cross-entropy, so the student
learns to give the cut face the clean face's answer.  Selected on PublicTest only: its clean
images, and the pipeline crops of the PublicTest scenes (scripts of ferlab_photo_scene: crops.py 600).

    python docs/experiments/ferlab_photo_pipecrops/finetune.py [epochs] [share of crops]
"""
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository
from benchmarks.photo_pipeline import SIZE_BINS  # noqa: E402
from ferlab import load_model  # noqa: E402
from ferlab.data import load_fer2013, to_arrays  # noqa: E402
from ferlab.evaluation import predict_arrays  # noqa: E402
from ferlab.preprocess import augmentation, normalize  # noqa: E402
from ferlab.training import batch_teacher_probabilities, distillation_loss  # noqa: E402

WORK = Path("/tmp/ferlab_pipecrops")
EPOCHS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
CROP_SHARE = float(sys.argv[2]) if len(sys.argv) > 2 else 0.5
LR, MIN_LR, WEIGHT_DECAY, EMA, ALPHA, T, BATCH = 5e-5, 1e-6, 0.05, 0.999, 0.7, 2.0, 64

torch.manual_seed(13)
rng = np.random.default_rng(13)
images, labels = to_arrays(load_fer2013("train"), 48)
valid_x, valid_y = to_arrays(load_fer2013("valid"), 48)
cut = np.load(WORK / "train_crops.npz")
crop_of = {int(i): k for k, i in enumerate(cut["index"])}
scene = np.load("/tmp/ferlab_photo_scene/crops_valid_600.npz")
scene_px, scene_y = scene["meta"][:, 0], valid_y[scene["meta"][:, 1].astype(int)]

teachers_file = WORK / "teachers.npy"
if teachers_file.exists():
    soft = np.load(teachers_file)
else:
    soft = batch_teacher_probabilities([load_model(n) for n in ("ferlab_photo", "ferlab_best", "resnet_se")],
                                       images, tta=True)
    np.save(teachers_file, soft)

student = load_model("ferlab_photo")
card, model = student.card, student.module.train()
ema = torch.optim.swa_utils.AveragedModel(model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(EMA),
                                          use_buffers=True)
opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
steps = EPOCHS * math.ceil(len(images) / BATCH)
sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps, eta_min=MIN_LR)
photo = augmentation("photo")


def report(module, tag):
    module.eval()
    clean = (predict_arrays(module, valid_x, card).argmax(1) == valid_y).mean()
    pipe = predict_arrays(module, scene["pipeline"], card).argmax(1) == scene_y
    orig = predict_arrays(module, valid_x[scene["meta"][:, 1].astype(int)], card).argmax(1) == scene_y
    bins = " ".join(f"{100 * pipe[(scene_px >= lo) & (scene_px < hi)].mean():.1f}" for lo, hi in SIZE_BINS)
    print(f"{tag}: PublicTest {100 * clean:.2f}% | scenes: pipeline {100 * pipe.mean():.2f}% "
          f"(by size {bins}), original crops {100 * orig.mean():.2f}%, gap {100 * (pipe.mean() - orig.mean()):+.2f}",
          flush=True)


report(model, "ferlab_photo")
model.train()
for epoch in range(1, EPOCHS + 1):
    t0, order, seen, used = time.time(), rng.permutation(len(images)), 0, 0
    for start in range(0, len(order), BATCH):
        rows = order[start:start + BATCH]
        batch = []
        for i in rows:
            k = crop_of.get(int(i))
            if k is not None and rng.random() < CROP_SHARE:
                x = torch.from_numpy(cut["crop"][k])[None]
                batch.append(x.flip(-1) if rng.random() < 0.5 else x)
                used += 1
            else:
                batch.append(photo(torch.from_numpy(images[i])[None]))
        x = normalize(torch.stack(batch), card)
        logits = model(x)
        loss = ALPHA * distillation_loss(logits, torch.from_numpy(soft[rows]), T) + \
            (1 - ALPHA) * F.cross_entropy(logits, torch.from_numpy(labels[rows]).long())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        ema.update_parameters(model)
        seen += len(rows)
    print(f"epoch {epoch}: {time.time() - t0:.0f} s, {used} of {seen} images were pipeline crops", flush=True)
    report(ema.module, f"epoch {epoch} (EMA)")
    torch.save(ema.module.state_dict(), WORK / f"ema_epoch{epoch}.pt")
    model.train()
