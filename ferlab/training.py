"""The training loop, readable top to bottom.

Data are decoded once into uint8 arrays (``ferlab.data.to_arrays``); each batch is augmented
as uint8 tensors in a loader worker, normalized with the shared ``ferlab.preprocess.normalize``
and fed channels-last to the model.  Every epoch writes a CSV row, the curves PNG and a
resumable ``state.pt``; the best epoch on PublicTest (``valid``) is exported as a safetensors
checkpoint with its model card.  Training never reads PrivateTest.

The same loop runs as one process (CPU or GPU) or as N under ``torchrun`` (DistributedDataParallel;
``ferlab.distributed`` holds the plumbing): the global batch stays ``batch_size``, each rank takes
its share of it, and only rank 0 writes.  On CUDA it trains in mixed precision (``precision``).
"""
from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms import v2

from . import distributed
from .checkpoints import STORAGE_DTYPES, base_card, decode_weights, encode_weights, save_checkpoint
from .data import default_source, ferplus_labels, fingerprint, load_fer2013, to_arrays
from .evaluation import predict_arrays
from .labels import NUM_CLASSES
from .metrics import classification_metrics
from .models import create_model
from .models.vgg import IMAGENET_MEAN, IMAGENET_STD
from .plots import training_curves
from .preprocess import augmentation, normalize
from .quantization import CALIBRATION_IMAGES, calibration_images, gptq_int8


@dataclass
class TrainConfig:
    name: str
    architecture: str
    model: dict = field(default_factory=dict)       # architecture config for create_model
    mean: list | None = None                         # normalization; default 0.5 (ImageNet for 3 channels)
    std: list | None = None
    augmentation: str = "basic"
    batch_size: int | None = None                    # global batch (all processes); unset: 64, 256 on a GPU
    epochs: int = 50
    optimizer: str = "adam"                          # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9
    nesterov: bool = False
    schedule: str = "plateau"                        # plateau | cosine | onecycle | none
    plateau_factor: float = 0.1
    plateau_patience: int = 10
    min_lr: float = 0.0
    warmup_epochs: int = 0                           # linear per-batch warm-up (cosine and plateau)
    label_smoothing: float = 0.0
    class_weights: str = "none"                      # none | balanced
    early_stopping: int | None = None                # patience in epochs on the selection metric
    select_on: str = "loss"                          # loss | accuracy (on valid)
    mixup: float = 0.0                               # alpha; 0 disables
    cutmix: float = 0.0
    ema: float = 0.0                                 # decay of a weight EMA; 0 disables
    swa_start: int | None = None                     # from this epoch on (1-based), average weights (SWA)
    init_from: str | None = None                     # start from this checkpoint's weights (name or folder)
    distill_from: list | None = None                 # teacher checkpoints: knowledge distillation from their ensemble
    distill_alpha: float = 0.5                       # weight of the distillation term; 1 - alpha on the labels
    distill_temperature: float = 2.0
    distill_tta: bool = True                         # teachers average each image and its mirror
    distill_online: bool = False                     # teachers score each augmented batch, not the clean images once
    seed: int = 0
    half: bool = False                               # store the exported weights in float16 (= storage: float16)
    storage: str | None = None                       # float32 | float16 | int8; unset: float16 if half else float32
    int8_rounding: str = "nearest"                   # nearest | gptq (int8: rounding that compensates output error)
    labels: str = "fer2013"                          # fer2013 | ferplus (FER+ majority; rows without one dropped)
    loader_workers: int = 1
    precision: str = "auto"                          # auto (bf16 or fp16 on CUDA, fp32 elsewhere) | fp32 | bf16 | fp16
    sync_batchnorm: bool = False                     # several processes: BatchNorm over the global batch

    def __post_init__(self):
        # checked here, not in train(): a wrong config should fail before the data are decoded
        if self.ema and self.swa_start:
            raise ValueError("ema and swa_start are two kinds of weight averaging; set one of them")
        if self.storage not in (None, *STORAGE_DTYPES) or (self.half and self.storage not in (None, "float16")):
            raise ValueError(f"storage {self.storage!r} with half={self.half}: set storage to one of "
                             f"{', '.join(STORAGE_DTYPES)} (half: true is storage: float16)")
        self.storage = self.storage or ("float16" if self.half else "float32")
        if self.int8_rounding not in ("nearest", "gptq") or (self.int8_rounding == "gptq" and self.storage != "int8"):
            raise ValueError(f"int8_rounding {self.int8_rounding!r} with storage {self.storage!r}: nearest or "
                             "gptq, and gptq only with storage: int8")
        if self.distill_from is not None:
            if isinstance(self.distill_from, str) or not self.distill_from:
                raise ValueError("distill_from is a list of teacher checkpoints (names or folders)")
            if self.mixup or self.cutmix:
                raise ValueError("distill_from uses each training image's own teacher probabilities; "
                                 "mixup/cutmix blend images, so they cannot be combined")
            if not 0.0 <= self.distill_alpha <= 1.0 or self.distill_temperature <= 0:
                raise ValueError("distill_alpha must be in [0, 1] and distill_temperature > 0")
        elif self.distill_online:
            raise ValueError("distill_online needs teachers: set distill_from")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision {self.precision!r}: auto, fp32, bf16 or fp16")

    @classmethod
    def from_file(cls, path: str | Path, **overrides) -> "TrainConfig":
        import yaml
        raw = yaml.safe_load(Path(path).read_text()) or {}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {unknown}; known: {sorted(known)}")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)


def balanced_class_weights(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> torch.Tensor:
    """n / (k * count_c), as scikit-learn's ``compute_class_weight('balanced')``."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    return torch.tensor(len(labels) / (num_classes * np.maximum(counts, 1)), dtype=torch.float32)


class ClassWeightedCrossEntropy(nn.Module):
    """Cross-entropy on label-smoothed targets, each sample weighted by its own class's weight (as
    Keras's ``class_weight`` does in the literature's recipes):
    sum_i w[y_i] CE(smooth(t_i), p_i) / sum_i w[y_i].

    ``nn.CrossEntropyLoss(weight=w, label_smoothing=eps)`` is not that: it weights every class's
    smoothing term by w[c] in every sample, so with balanced weights the rarest class (disgust,
    weight 9.4) gets almost as much target mass from smoothing as from its labels, and an untrained
    net's best constant answer is "disgust" for every face (VGG19 configuration 4's first epoch
    sat there: docs/experiments/vgg19_scratch.md).  Hard (class index) or soft (mixup)
    targets; without smoothing it equals ``nn.CrossEntropyLoss(weight=w)``."""

    def __init__(self, weight: torch.Tensor | None = None, label_smoothing: float = 0.0,
                 ctx: distributed.Context = distributed.Context()):
        super().__init__()
        self.register_buffer("weight", weight)
        self.label_smoothing = label_smoothing
        self.ctx = ctx

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        k = logits.shape[1]
        t = F.one_hot(target, k).to(logits.dtype) if target.dtype == torch.long else target
        smoothed = t * (1 - self.label_smoothing) + self.label_smoothing / k
        ce = -(smoothed * F.log_softmax(logits, dim=1)).sum(dim=1)
        if self.weight is None:
            return ce.mean()
        w = t @ self.weight
        if self.ctx.distributed:
            # each rank holds a share of the batch: normalize by the global batch's weight sum, and
            # scale by the number of ranks because DDP averages the ranks' gradients
            return (w * ce).sum() * self.ctx.world / distributed.all_sum(self.ctx, w.sum().item())[0]
        return (w * ce).sum() / w.sum()


class AugmentedBatches(torch.utils.data.Dataset):
    """Indexable by a list of indices: returns one augmented uint8 batch, its labels and, when
    ``soft`` (teacher probabilities) is given, its rows for the same images.  Each image's random
    augmentation is seeded by (seed, epoch, index), so it is the same in whichever process and
    batch the image lands (a run on N processes sees the images one process would)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform, soft: np.ndarray | None = None,
                 seed: int = 0, epoch: int = 0):
        self.images = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
        self.labels = torch.from_numpy(labels)
        self.soft = torch.from_numpy(soft) if soft is not None else None
        self.transform = transform
        self.seed, self.epoch = seed, epoch

    def __len__(self):
        return len(self.labels)

    def _augment(self, index: int) -> torch.Tensor:
        torch.manual_seed(distributed.sample_seed(self.seed, self.epoch, index))
        return self.transform(self.images[index])

    def __getitem__(self, indices):
        with torch.random.fork_rng(devices=[]):  # the caller's random stream (dropout) is left as it was
            batch = torch.stack([self._augment(int(i)) for i in indices])
        if self.soft is None:
            return batch, self.labels[indices]
        return batch, self.labels[indices], self.soft[indices]


def _worker_init(_):
    torch.set_num_threads(1)


def make_loader(images, labels, cfg: TrainConfig, epoch: int, soft: np.ndarray | None = None,
                ctx: distributed.Context = distributed.Context(), batch_size: int = 64, pin_memory: bool = False):
    """This rank's augmented batches of one epoch.  The epoch's permutation depends only on the seed
    and the epoch; ``DistributedSampler`` deals it out so that the ranks' k-th batches together are
    the k-th global batch of ``batch_size`` images."""
    dataset = AugmentedBatches(images, labels, augmentation(cfg.augmentation, images.shape[-1]), soft, cfg.seed, epoch)
    order = torch.utils.data.DistributedSampler(dataset, num_replicas=ctx.world, rank=ctx.rank, shuffle=True,
                                                seed=cfg.seed * 100_003, drop_last=True)
    order.set_epoch(epoch)
    sampler = torch.utils.data.BatchSampler(order, batch_size // ctx.world, drop_last=True)
    return torch.utils.data.DataLoader(dataset, sampler=sampler, batch_size=None, num_workers=cfg.loader_workers,
                                       worker_init_fn=_worker_init if cfg.loader_workers else None,
                                       prefetch_factor=4 if cfg.loader_workers else None, pin_memory=pin_memory)


def load_split(split: str, source: str, size: int, labels: str = "fer2013"):
    """Decoded images and labels; with ``labels="ferplus"`` the FER+ majority labels, keeping only
    rows that have one."""
    ds = load_fer2013(split, source)
    images, y = to_arrays(ds, size)
    if labels == "ferplus":
        y = ferplus_labels(ds)
        keep = y >= 0
        return images[keep], y[keep]
    if labels != "fer2013":
        raise ValueError(f"unknown labels {labels!r}; expected fer2013 or ferplus")
    return images, y


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in params if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected adam, adamw or sgd")


def make_scheduler(opt, cfg: TrainConfig, steps_per_epoch: int):
    """Returns (scheduler, steps_per_batch): per-batch schedulers step every batch, plateau per epoch."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.plateau_factor, patience=cfg.plateau_patience, min_lr=cfg.min_lr), False
    if cfg.schedule == "cosine":
        warm = cfg.warmup_epochs * steps_per_epoch

        def factor(step):
            if step < warm:
                return (step + 1) / warm
            progress = (step - warm) / max(1, total - warm)
            floor = cfg.min_lr / cfg.lr
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        return torch.optim.lr_scheduler.LambdaLR(opt, factor), True
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total), True
    if cfg.schedule == "none":
        return None, False
    raise ValueError(f"unknown schedule {cfg.schedule!r}; expected plateau, cosine, onecycle or none")


def plateau_warmup(opt, cfg: TrainConfig, step: int, steps_per_epoch: int) -> None:
    """Linear per-batch warm-up to ``cfg.lr`` over the first ``warmup_epochs`` epochs of a plateau
    schedule (the cosine schedule has its own). ReduceLROnPlateau only acts at epoch ends, after the
    warm-up has reached ``cfg.lr``, so the two never fight over the learning rate."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if cfg.schedule == "plateau" and step < warm:
        for group in opt.param_groups:
            group["lr"] = cfg.lr * (step + 1) / warm


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Hinton et al. (2015): KL(teacher_T || student_T) * T^2, where ``_T`` is the distribution at
    temperature T.  The teacher is given as probabilities (an ensemble's mean), so its tempered
    distribution is softmax(log p / T); the T^2 keeps gradient sizes comparable across T."""
    t = temperature
    teacher = torch.softmax(torch.log(teacher_probs.clamp_min(1e-8)) / t, dim=1)
    return F.kl_div(F.log_softmax(logits / t, dim=1), teacher, reduction="batchmean") * t * t


def load_teachers(teachers: list, images: np.ndarray, labels: np.ndarray, out: Path, resume: bool,
                  tta: bool, online: bool, device: torch.device | None = None,
                  write: bool = True) -> tuple[list, list, bool]:
    """Load the teacher checkpoints and record them in ``out/teachers.json`` with the training data's
    fingerprint (``write``: rank 0 only); a resume whose teachers, their mode or the training data
    changed is refused.  Returns the models, per teacher its name, weights hash and mode, and
    whether this resumes a run with the same teachers."""
    from .audit import weights_hash
    from .checkpoints import load_model
    models = [load_model(t, device=device) for t in teachers]  # on the student's device
    for m in models:
        if m.card["input_size"] != images.shape[-1]:
            raise ValueError(f"teacher {m.name} takes {m.card['input_size']}px inputs; the student {images.shape[-1]}px")
    info = [{"name": m.name, "weights_hash": weights_hash(m), "tta": tta, "online": online} for m in models]
    record = {"teachers": info, "train_fingerprint": fingerprint(images, labels)}
    record_path = out / "teachers.json"
    if resume and record_path.exists():
        if json.loads(record_path.read_text()) != record:
            raise ValueError(f"{out} was trained with {record_path.read_text().strip()}; this run has {record}: "
                             "start a new run folder")
        return models, info, True
    if write:
        record_path.write_text(json.dumps(record) + "\n")
    return models, info, False


def record_start(initialized_from: dict, out: Path, resume: bool, write: bool = True) -> None:
    """Record which weights ``init_from`` named in ``out/initialized_from.json``; a resume whose
    ``init_from`` now holds other weights (a checkpoint renamed or re-shipped under that name) is
    refused, since the export's card would otherwise credit the wrong start.  A run begun before
    this record existed gets it on its first resume."""
    record_path = out / "initialized_from.json"
    if resume and record_path.exists():
        then = json.loads(record_path.read_text())
        if then["weights_hash"] != initialized_from["weights_hash"]:
            raise ValueError(f"{out} started from {then['name']} with weights {then['weights_hash']}; "
                             f"init_from {initialized_from['name']!r} now holds {initialized_from['weights_hash']}: "
                             "point init_from at the checkpoint it started from, or start a new run folder")
        return
    if write:
        record_path.write_text(json.dumps(initialized_from) + "\n")


def teacher_probabilities(teachers: list, images: np.ndarray, labels: np.ndarray, out: Path, resume: bool,
                          tta: bool = True, device: torch.device | None = None,
                          ctx: distributed.Context = distributed.Context()) -> tuple[np.ndarray, list]:
    """Offline targets: mean (flip-TTA) probabilities of ``teachers`` on the (un-augmented)
    training images, cached in ``out`` so a resumed run trains on the same targets.  Each augmented
    view is then matched to its clean image's teacher output, which costs one pass instead of a
    teacher forward per batch (``distill_online``).  Several processes: rank 0 computes them, the
    others read its file."""
    cache = out / "teacher_probs.npy"
    if not ctx.is_main:  # rank 0 has written the targets and the teachers' record
        distributed.barrier(ctx)
        return np.load(cache), json.loads((out / "teachers.json").read_text())["teachers"]
    models, info, same = load_teachers(teachers, images, labels, out, resume, tta, online=False, device=device)
    if same and cache.exists():
        distributed.barrier(ctx)
        return np.load(cache), info
    probs = batch_teacher_probabilities(models, images, tta)
    np.save(str(cache) + ".tmp.npy", probs)
    os.replace(str(cache) + ".tmp.npy", cache)
    distributed.barrier(ctx)
    return probs, info


def batch_teacher_probabilities(models: list, images: np.ndarray, tta: bool) -> np.ndarray:
    """The teachers' mean (flip-TTA) probabilities on uint8 ``(N, H, W)`` images; online
    distillation calls it on every augmented batch, so the targets are for the view the student sees."""
    return np.mean([predict_arrays(m.module, images, m.card, m.device, tta=tta) for m in models],
                   axis=0).astype(np.float32)


def hardware(processes: int = 1) -> str:
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} (CUDA)"
        return gpu if processes == 1 else f"{processes} x {gpu}"
    # the vector ISA torch dispatches to (AVX2 / AVX512 on x86) moves CPU speed several-fold
    isa = torch.backends.cpu.get_cpu_capability()
    where = (f"{platform.processor() or platform.machine()} CPU ({isa}), {torch.get_num_threads()} threads, "
             f"{os.cpu_count()} cores")
    return where if processes == 1 else f"{processes} processes x {where}"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a config's ``precision`` on ``device`` (``None``: float32 throughout)."""
    if precision == "auto":
        if device.type != "cuda":
            return None  # CPU: float32 is today's speed; bf16 autocast is slower on most CPUs
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if precision == "fp16" and device.type != "cuda":
        raise ValueError(f"precision fp16 needs a CUDA GPU (this run is on {device.type}); use bf16 or fp32")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def _export_card(model, cfg, mean, std, extra) -> dict:
    card = base_card(model, mean, std)
    card.update({"name": cfg.name, "training_config": asdict(cfg)}, **extra)
    return card


def train(cfg: TrainConfig, source: str | None = None, out_dir: str | Path | None = None,
          resume: bool = False, command: str | None = None, progress: bool = True) -> Path:
    """Train ``cfg`` on ``train``, select on ``valid``, export the best epoch to ``out_dir``.
    Under ``torchrun`` every process calls this; rank 0 writes."""
    ctx, device = distributed.setup()
    try:
        return _train(cfg, ctx, device, source, out_dir, resume, command, progress)
    finally:
        distributed.teardown(ctx)


def _train(cfg, ctx, device, source, out_dir, resume, command, progress) -> Path:
    out = Path(out_dir or Path("runs") / cfg.name)
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    distributed.barrier(ctx)
    source = str(source or default_source())
    say = print if ctx.is_main else (lambda *a, **k: None)
    batch_size = cfg.batch_size or (256 if device.type == "cuda" else 64)
    if batch_size % ctx.world:
        raise ValueError(f"batch_size {batch_size} (the global batch) must divide into {ctx.world} processes")
    amp_dtype = autocast_dtype(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    # read first, so that a resume under another config fails before the data and teachers load
    state_path, log_path = out / "state.pt", out / "log.csv"
    state = torch.load(state_path, map_location=device, weights_only=True) if resume and state_path.exists() else None
    if state is not None:
        check_resumed_config(state.get("config"), cfg, state_path)

    # ---- data: decoded once, kept in memory as uint8
    model = create_model(cfg.architecture, **cfg.model)
    size = model.input_size
    train_x, train_y = load_split("train", source, size, cfg.labels)
    valid_x, valid_y = load_split("valid", source, size, cfg.labels)
    card = input_card(cfg, model.in_channels)

    # ---- model, loss, optimizer, schedule
    initialized_from = _initialize(model, cfg, card, cfg.init_from)[0] if cfg.init_from else None
    if initialized_from:
        record_start(initialized_from, out, resume and state is not None, write=ctx.is_main)
    soft, teachers, teacher_models = None, None, None
    if cfg.distill_from and cfg.distill_online:  # each rank scores its own share of every batch
        teacher_models, teachers, _ = load_teachers(cfg.distill_from, train_x, train_y, out, resume,
                                                    cfg.distill_tta, online=True, device=device, write=ctx.is_main)
    elif cfg.distill_from:
        soft, teachers = teacher_probabilities(cfg.distill_from, train_x, train_y, out, resume, cfg.distill_tta,
                                               device, ctx)
    if cfg.sync_batchnorm and ctx.distributed:
        distributed.sync_batchnorm(model, device)
    model.to(device, memory_format=torch.channels_last)
    # DDP averages the gradients of the ranks' shares, which is the global batch's gradient
    net = (torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
           if ctx.distributed else model)
    weight = balanced_class_weights(train_y).to(device) if cfg.class_weights == "balanced" else None
    criterion = ClassWeightedCrossEntropy(weight, cfg.label_smoothing, ctx)
    opt = make_optimizer(model.parameters(), cfg)
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    steps_per_epoch = len(train_y) // batch_size
    scheduler, per_batch = make_scheduler(opt, cfg, steps_per_epoch)
    ema = torch.optim.swa_utils.AveragedModel(
        model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(cfg.ema), use_buffers=True) if cfg.ema else None
    swa = torch.optim.swa_utils.AveragedModel(model, use_buffers=False) if cfg.swa_start else None
    mixers = [m(alpha=a, num_classes=NUM_CLASSES) for m, a in ((v2.MixUp, cfg.mixup), (v2.CutMix, cfg.cutmix)) if a]
    mix = v2.RandomChoice(mixers) if mixers else None  # mixes within each rank's share of the batch

    # ---- resume (a state written by any number of processes resumes in any other)
    start_epoch, history = 0, []
    best = {"score": math.inf, "epoch": -1}
    bad_epochs, wall = 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(load_optimizer_state(state, state_path))
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if ema is not None:
            ema.load_state_dict(state["ema"])
        if swa is not None and state.get("swa"):
            swa.load_state_dict(state["swa"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        start_epoch, history, best = state["epoch"] + 1, state["history"], state["best"]
        bad_epochs, wall = state["bad_epochs"], state["wall_seconds"]
        say(f"resumed {cfg.name} at epoch {start_epoch} (best {best})", flush=True)
    if ctx.rank:  # ranks draw their own dropout masks
        torch.manual_seed(int(torch.randint(0, 2**62, (1,))) + ctx.rank)

    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.time()
        net.train()
        loss_sum, correct, seen = 0.0, 0, 0
        batches = make_loader(train_x, train_y, cfg, epoch, soft, ctx, batch_size, pin_memory=device.type == "cuda")
        if progress and ctx.is_main:
            from tqdm.auto import tqdm
            batches = tqdm(batches, total=steps_per_epoch, desc=f"{cfg.name} epoch {epoch + 1}/{cfg.epochs}",
                           leave=False, mininterval=1 if sys.stderr.isatty() else 60)
        for step, (xb, yb, *teacher) in enumerate(batches, start=epoch * steps_per_epoch):
            plateau_warmup(opt, cfg, step, steps_per_epoch)
            if teacher_models:
                teacher = [torch.from_numpy(batch_teacher_probabilities(teacher_models, xb[:, 0].numpy(),
                                                                        cfg.distill_tta))]
            x = normalize(xb.to(device, non_blocking=True), card)
            y = yb.to(device, non_blocking=True)
            target = y
            if mix is not None:
                x, target = mix(x, y)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                logits = net(x)
                loss = criterion(logits.float(), target)  # class-weighted: over the global batch
                if teacher:  # the logged train_loss is this mixed objective
                    kd = distillation_loss(logits.float(), teacher[0].to(device), cfg.distill_temperature)
                    loss = cfg.distill_alpha * kd + (1 - cfg.distill_alpha) * loss
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if per_batch:
                scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        loss_sum, correct, seen = distributed.all_sum(ctx, loss_sum, correct, seen)

        # ---- validate on PublicTest: each rank scores a share, all get every probability
        evaluated = ema.module if ema is not None else model
        if swa is not None and epoch + 1 >= cfg.swa_start:
            swa.update_parameters(model)
            _recompute_batchnorm(swa.module, train_x, train_y, card, cfg, epoch, device, ctx, batch_size)
            evaluated = swa.module
        distributed.broadcast_buffers(ctx, evaluated)  # rank 0's BatchNorm statistics, as DDP keeps them
        part = distributed.shard(ctx, len(valid_y))
        probs = distributed.gather_rows(ctx, predict_arrays(evaluated, valid_x[part], card, device))
        valid_loss = F.nll_loss(torch.log(torch.from_numpy(probs).clamp_min(1e-12)), torch.from_numpy(valid_y),
                                weight=weight.cpu() if weight is not None else None).item()
        valid_acc = float((probs.argmax(1) == valid_y).mean())
        if scheduler is not None and not per_batch:
            scheduler.step(valid_loss)
        wall += time.time() - t0
        row = {"epoch": epoch + 1, "train_loss": loss_sum / seen, "train_acc": correct / seen,
               "valid_loss": valid_loss, "valid_acc": valid_acc, "lr": opt.param_groups[0]["lr"],
               "seconds": round(time.time() - t0, 1)}
        history.append(row)
        say(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

        score = valid_loss if cfg.select_on == "loss" else -valid_acc
        improved = score < best["score"]
        if improved:
            best = {"score": score, "epoch": epoch + 1, "valid_acc": valid_acc, "valid_loss": valid_loss}
            bad_epochs = 0
        else:
            bad_epochs += 1
        if ctx.is_main:
            if improved:
                save_checkpoint(evaluated, {"architecture": cfg.architecture, "config": evaluated.config}, out / "best")
            with open(log_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(row))
                writer.writeheader()
                writer.writerows(history)
            training_curves(history, out / "curves.png", title=cfg.name)
            save_state(state_path, cfg, model, opt, scheduler, epoch, history, best, bad_epochs, wall, ema, swa,
                       scaler)
        distributed.barrier(ctx)
        if cfg.early_stopping and bad_epochs >= cfg.early_stopping:
            say(f"early stopping after epoch {epoch + 1}: no improvement for {bad_epochs} epochs", flush=True)
            break

    if ctx.is_main:
        export_best(cfg, out, source, card, train_x, train_y, valid_x, valid_y, history, best, wall, command,
                    initialized_from, teachers, ctx.world)
    distributed.barrier(ctx)
    return out


def save_state(path: Path, cfg: TrainConfig, model, opt, scheduler, epoch: int, history: list, best: dict,
               bad_epochs: int, wall: float, ema=None, swa=None, scaler=None) -> None:
    """The resumable ``state.pt`` that ``train(..., resume=True)`` reads, written atomically;
    ``epoch`` is the 0-based index of the last finished epoch.  It keeps the config, so that a
    resume under another one is refused (``check_resumed_config``).

    The optimizer's state (Adam's two moments: twice the model) goes to its own file, named by
    epoch and written before the ``state.pt`` that names it, so a kill between the two writes
    leaves the previous pair whole.  Older optimizer files are removed once the new pair is in place.
    Run folders are working state: they stay out of git (``runs/`` is ignored)."""
    path = Path(path)
    opt_file = f"optimizer-{epoch + 1:04d}.pt"
    _atomic_torch_save({"epoch": epoch, "optimizer": opt.state_dict()}, path.parent / opt_file)
    state = {"config": asdict(cfg), "model": model.state_dict(), "optimizer_file": opt_file,
             "scheduler": scheduler.state_dict() if scheduler is not None else {},
             "ema": ema.state_dict() if ema is not None else {},
             "swa": swa.state_dict() if swa is not None else {}, "rng": torch.get_rng_state(),
             "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else {},
             "epoch": epoch, "history": history, "best": best, "bad_epochs": bad_epochs, "wall_seconds": wall}
    _atomic_torch_save(state, path)
    for old in path.parent.glob("optimizer-*.pt"):
        if old.name != opt_file:
            old.unlink()


def _atomic_torch_save(obj, path: Path) -> None:
    torch.save(obj, str(path) + ".tmp")
    os.replace(str(path) + ".tmp", path)


def load_optimizer_state(state: dict, state_path: Path) -> dict:
    """The optimizer state of a ``state.pt``, from the file ``save_state`` wrote beside it."""
    opt_path = Path(state_path).parent / state["optimizer_file"]
    if not opt_path.exists():
        raise FileNotFoundError(f"{state_path} needs {opt_path.name} beside it (the optimizer's moments); "
                                "copy the whole run folder")
    saved = torch.load(opt_path, map_location="cpu", weights_only=True)
    if saved["epoch"] != state["epoch"]:
        raise ValueError(f"{opt_path} is from epoch {saved['epoch'] + 1}, {state_path} from {state['epoch'] + 1}")
    return saved["optimizer"]


def check_resumed_config(saved: dict | None, cfg: TrainConfig, state_path: Path) -> None:
    """Refuse to resume ``state_path`` under a config other than the one that wrote it: the run
    would go on as a hybrid of two recipes that neither config describes, and the exported card
    would name only the second.  Allowed: ``loader_workers`` and ``early_stopping`` (they change
    no step already taken) and ``epochs`` where the learning rate does not depend on it (plateau
    and none; the cosine and one-cycle curves are laid out over all epochs).  A key the saved
    config lacks (added to TrainConfig after it was written) counts as its default."""
    if saved is None:
        print(f"note: {state_path} predates recorded configs, so this resume cannot check that the config "
              "is the one it was trained with", flush=True)
        return
    defaults = asdict(TrainConfig(name=cfg.name, architecture=cfg.architecture))
    current = asdict(cfg)
    allowed = {"loader_workers", "early_stopping"} | ({"epochs"} if cfg.schedule in ("plateau", "none") else set())
    changed = sorted(k for k in current if k not in allowed and saved.get(k, defaults[k]) != current[k])
    if changed:
        differences = "; ".join(f"{k}: {saved.get(k, defaults[k])!r} in the state, {current[k]!r} now" for k in changed)
        raise ValueError(f"{state_path} was trained with another config ({differences}). Resume with the config "
                         "it was trained with, or start a new run folder (--out).")


def input_card(cfg: TrainConfig, channels: int) -> dict:
    """Channels and normalization of the model's input: the config's, else 0.5 / 0.5 per channel
    (ImageNet's for 3 channels)."""
    mean = cfg.mean or (list(IMAGENET_MEAN) if channels == 3 else [0.5] * channels)
    std = cfg.std or (list(IMAGENET_STD) if channels == 3 else [0.5] * channels)
    return {"in_channels": channels, "mean": mean, "std": std}


def _initialize(model, cfg: TrainConfig, card: dict, checkpoint) -> tuple[dict, dict]:
    """Load ``checkpoint``'s weights into ``model``; the architecture, its config and the
    normalization must match, or training would silently go on from a different network.  Returns
    what a card records of the checkpoint (``initialized_from``) and the checkpoint's own card."""
    from .checkpoints import load_model
    start = load_model(checkpoint, device="cpu")
    if start.card["architecture"] != cfg.architecture or start.module.config != model.config:
        raise ValueError(f"checkpoint {str(checkpoint)!r} is {start.card['architecture']} {start.module.config}; "
                         f"this config builds {cfg.architecture} {model.config} (init_from and rebuild need the same)")
    if [start.card["mean"], start.card["std"]] != [card["mean"], card["std"]]:
        raise ValueError(f"checkpoint {str(checkpoint)!r} normalizes with mean {start.card['mean']} / std "
                         f"{start.card['std']}; this config uses {card['mean']} / {card['std']}")
    model.load_state_dict(start.module.state_dict())
    return run_record(start), start.card


def run_record(model) -> dict:
    """What a card keeps of a checkpoint another run starts from (``init_from``) or averages
    (``ferlab.soup``): its name, the hash of its weights and what its own training took."""
    from .audit import weights_hash
    training = model.card.get("training", {})
    return {"name": model.name, "weights_hash": weights_hash(model), "epochs_run": training.get("epochs_run"),
            "wall_seconds": training.get("wall_seconds"), "hardware": training.get("hardware")}


@torch.no_grad()
def _recompute_batchnorm(model, train_x, train_y, card, cfg, epoch, device, ctx=distributed.Context(), batch_size=64):
    """Averaged weights need their own BatchNorm statistics: one pass over this epoch's training
    batches (same augmentation as training), as ``torch.optim.swa_utils.update_bn`` does.  Each
    rank passes its share (synchronized BatchNorm averages them; otherwise rank 0's are kept)."""
    def inputs():
        for xb, _ in make_loader(train_x, train_y, cfg, epoch, ctx=ctx, batch_size=batch_size):
            yield normalize(xb.to(device), card).contiguous(memory_format=torch.channels_last)
    torch.optim.swa_utils.update_bn(inputs(), model)


def export_best(cfg, out, source, card, train_x, train_y, valid_x, valid_y, history, best, wall, command,
                initialized_from=None, teachers=None, processes: int = 1) -> Path:
    """Rebuild the best epoch, score it on valid, write weights + card to ``out``."""
    from safetensors.torch import load_file

    model = create_model(cfg.architecture, **cfg.model)
    best_weights = load_file(str(out / "best" / "model.safetensors"))
    model.load_state_dict(best_weights)
    encoded = (gptq_int8(model, calibration_images(train_x), card) if cfg.int8_rounding == "gptq"
               else encode_weights(best_weights, cfg.storage))
    # the weights as the chosen storage will load them: the card's metrics are the shipped weights'
    model.load_state_dict(decode_weights(encoded))
    model.eval()
    probs = predict_arrays(model, valid_x, card, torch.device("cpu"))
    probs_tta = predict_arrays(model, valid_x, card, torch.device("cpu"), tta=True)
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        model(model.example_input(1))
    extra = {
        "data": {"source": source, "labels": cfg.labels, "train_fingerprint": fingerprint(train_x, train_y),
                 "valid_fingerprint": fingerprint(valid_x, valid_y), "train_size": int(len(train_y)),
                 "valid_size": int(len(valid_y))},
        "command": command,
        "training": {"epochs_run": len(history), "best_epoch": best["epoch"], "wall_seconds": round(wall, 1),
                     "hardware": hardware(processes), "torch": torch.__version__,
                     **({"initialized_from": initialized_from} if initialized_from else {}),
                     **({"distilled_from": teachers} if teachers else {})},
        "mflops": round(counter.get_total_flops() / 1e6, 2),
        "metrics": {"valid": classification_metrics(valid_y, probs),
                    "valid_tta": classification_metrics(valid_y, probs_tta)},
    }
    model.load_state_dict(best_weights)  # float32, the reference; the file gets ``encoded``
    if cfg.storage not in (None, "float32"):
        # the float32 weights do not ship (they are what the size limit keeps out), so what the
        # storage costs is measured here, once, on PublicTest, and kept in the card
        reference = predict_arrays(model, valid_x, card, torch.device("cpu"))
        extra["storage_check"] = {
            "storage": cfg.storage, "split": "valid",
            **({"rounding": cfg.int8_rounding} if cfg.storage == "int8" else {}),
            **({"calibration": f"{CALIBRATION_IMAGES} Training images"} if cfg.int8_rounding == "gptq" else {}),
            "accuracy_float32": float((reference.argmax(1) == valid_y).mean()),
            "accuracy_stored": float((probs.argmax(1) == valid_y).mean()),
            "answers_changed": int((probs.argmax(1) != reference.argmax(1)).sum()),
            "max_probability_change": float(np.abs(probs - reference).max())}
    full = _export_card(model, cfg, card["mean"], card["std"], extra)
    save_checkpoint(model, full, out, storage=cfg.storage, tensors=encoded)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2) + "\n")
    return out


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in ["python"] + sys.argv)
