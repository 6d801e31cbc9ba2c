"""Can a better int8 rounding or a BatchNorm correction recover what int8 costs vgg19, in the same
file format (int8 weights + per-channel scales; BatchNorm stays float32)?  PublicTest accuracy of a
run's float32 best weights, stored as:
  maxabs  - the shipped rule, scale = max|w| / 127 per output channel
  mse     - per output channel, the clipping scale in [0.5, 1] x max|w| that minimizes the squared
            weight error
  + bn    - then every BatchNorm's running mean/var shifted so that its input, measured on 4,096
            Training images, has the mean and variance it has in the float32 net (the quantization
            error moves these; the correction is a few passes over training data, no labels)
Run from the repository root:
PYTHONPATH=. python docs/experiments/vgg19_scratch/int8_calibration.py [float32 weights]"""
import sys
import numpy as np, torch
from safetensors.torch import load_file
from ferlab import load_model
from ferlab.checkpoints import stored
from ferlab.evaluation import predict_arrays
from ferlab.preprocess import normalize
from ferlab.training import load_split

torch.set_num_threads(2)
m = load_model("vgg19")
module, card = m.module, m.card
f32 = load_file(sys.argv[1] if len(sys.argv) > 1 else "runs/vgg19/best/model.safetensors")
x, y = load_split("valid", None, 48)
train_x, _ = load_split("train", None, 48)
calibration = train_x[np.random.default_rng(0).permutation(len(train_x))[:4096]]


def acc(state):
    module.load_state_dict(state)
    return np.mean(predict_arrays(module, x, card).argmax(1) == y)


def mse_int8(tensors):
    out = {}
    for name, w in tensors.items():
        if not (w.is_floating_point() and w.dim() >= 2):
            out[name] = w
            continue
        flat = w.flatten(1)
        top = flat.abs().amax(1).clamp_min(1e-12)
        best, best_err = top.clone(), torch.full_like(top, float("inf"))
        for alpha in torch.linspace(0.5, 1.0, 51):
            s = alpha * top / 127
            err = ((torch.round(flat / s[:, None]).clamp(-127, 127) * s[:, None] - flat) ** 2).sum(1)
            better = err < best_err
            best_err, best = torch.where(better, err, best_err), torch.where(better, alpha * top, best)
        s = (best / 127).view(-1, *[1] * (w.dim() - 1))
        out[name] = torch.round(w / s).clamp(-127, 127) * s
    return out


def bn_input_stats(state):
    """Per-channel mean and variance of every BatchNorm's input on the calibration images."""
    module.load_state_dict(state)
    module.eval()
    sums = {}

    def hook(name):
        def record(_, inputs):
            t = inputs[0].detach().double()
            t = t.transpose(0, 1).flatten(1)  # channels first
            s = sums.setdefault(name, [0, 0.0, 0.0])
            s[0] += t.shape[1]
            s[1] = s[1] + t.sum(1)
            s[2] = s[2] + (t * t).sum(1)
        return record

    handles = [mod.register_forward_pre_hook(hook(n)) for n, mod in module.named_modules()
               if isinstance(mod, torch.nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for start in range(0, len(calibration), 256):
            batch = normalize(torch.from_numpy(calibration[start:start + 256]).unsqueeze(1), card)
            module(batch.contiguous(memory_format=torch.channels_last))
    for h in handles:
        h.remove()
    return {n: (s[1] / s[0], s[2] / s[0] - (s[1] / s[0]) ** 2) for n, s in sums.items()}


def bn_corrected(quantized, passes=3):
    reference = bn_input_stats(f32)
    state = dict(quantized)
    for _ in range(passes):
        now = bn_input_stats(state)
        for name, (mu_f, var_f) in reference.items():
            mu_q, var_q = now[name]
            eps = dict(module.named_modules())[name].eps
            rm, rv = f32[name + ".running_mean"].double(), f32[name + ".running_var"].double()
            rv_new = (rv + eps) * (var_q / var_f.clamp_min(1e-12)) - eps
            rm_new = mu_q - (mu_f - rm) * torch.sqrt((rv_new + eps) / (rv + eps))
            state[name + ".running_var"] = rv_new.clamp_min(0).float()
            state[name + ".running_mean"] = rm_new.float()
    return state


maxabs, mse = stored(f32, "int8"), mse_int8(f32)
print(f"float32 {acc(f32):.2%}", flush=True)
print(f"int8 maxabs {acc(maxabs):.2%}", flush=True)
print(f"int8 mse {acc(mse):.2%}", flush=True)
print(f"int8 maxabs + bn {acc(bn_corrected(maxabs)):.2%}", flush=True)
