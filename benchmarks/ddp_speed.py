"""Training throughput on 1 process and on N processes under torchrun, same global batch, one run.

    python -m benchmarks.ddp_speed [--architecture cnn] [--processes 2] [--steps 40] [--out results/ddp_speed.md]

Each configuration is launched as ``torchrun --standalone --nproc_per_node=P`` over this file's
worker, which runs the training loop's own pieces (``make_loader`` with per-rank shares of the
global batch, DistributedDataParallel, per-process or global BatchNorm) on generated 48x48 images
(timing does not depend on the pixels) and times the steps after a warm-up.  The cores are split
evenly between the processes (OMP_NUM_THREADS), so the ratio answers: on this machine, is it
faster to give the cores to one process or to P of them?  The configurations alternate, twice
each, and the better of the two is reported: 1 process, P processes, P processes with global
BatchNorm (``sync_batchnorm``).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import torch


def worker(args) -> None:
    from ferlab import distributed
    from ferlab.models import create_model
    from ferlab.preprocess import normalize
    from ferlab.training import ClassWeightedCrossEntropy, TrainConfig, make_loader, make_optimizer

    ctx, device = distributed.setup()
    torch.manual_seed(0)
    cfg = TrainConfig(name="bench", architecture=args.architecture, augmentation="basic", batch_size=args.batch,
                      loader_workers=0, sync_batchnorm=args.sync_batchnorm)
    rng = np.random.default_rng(0)
    n = args.batch * (args.steps + args.warmup)
    images, labels = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), rng.integers(0, 7, n)
    model = create_model(args.architecture)
    if cfg.sync_batchnorm and ctx.distributed:
        distributed.sync_batchnorm(model, device)
    model.to(device, memory_format=torch.channels_last)
    net = torch.nn.parallel.DistributedDataParallel(model) if ctx.distributed else model
    opt, criterion = make_optimizer(model.parameters(), cfg), ClassWeightedCrossEntropy()
    card = {"mean": [0.5], "std": [0.5]}
    net.train()
    for step, (xb, yb) in enumerate(make_loader(images, labels, cfg, 0, ctx=ctx, batch_size=args.batch)):
        if step == args.warmup:
            distributed.barrier(ctx)
            t0 = time.perf_counter()
        loss = criterion(net(normalize(xb, card).contiguous(memory_format=torch.channels_last)), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    distributed.barrier(ctx)
    seconds = time.perf_counter() - t0
    if ctx.is_main:
        print(json.dumps({"processes": ctx.world, "threads": torch.get_num_threads(), "steps": args.steps,
                          "seconds": seconds}), flush=True)
    distributed.teardown(ctx)


def launch(args, processes: int, sync_batchnorm: bool) -> dict:
    cores = os.cpu_count() or 1
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // processes)), "GLOO_SOCKET_IFNAME": "lo"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
           "-m", "benchmarks.ddp_speed", "--worker", "--architecture", args.architecture, "--batch", str(args.batch),
           "--steps", str(args.steps), "--warmup", str(args.warmup)] + (["--sync-batchnorm"] if sync_batchnorm else [])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--architecture", default="cnn")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64, help="global batch")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--sync-batchnorm", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    from benchmarks import report
    configs = [(1, False), (args.processes, False), (args.processes, True)]
    runs = {c: [] for c in configs}
    for _ in range(2):
        for c in configs:
            runs[c].append(launch(args, *c))
    best = {c: min(r, key=lambda r: r["seconds"]) for c, r in runs.items()}
    per_step = {c: b["seconds"] / b["steps"] for c, b in best.items()}
    single = per_step[(1, False)]
    isa = torch.backends.cpu.get_cpu_capability()
    lines = [f"### Training throughput, 1 vs {args.processes} processes (CPU ({isa}), {os.cpu_count()} cores)\n",
             f"`{args.architecture}`, global batch {args.batch}, {args.steps} timed steps after {args.warmup}, "
             "'basic' augmentation in the training process; gloo over loopback.  Best of 2 alternating runs "
             "each.\n",
             "| processes | BatchNorm | threads each | s / step | images / s | speed-up |", "|---|---|---|---|---|---|"]
    for (p, sync), b in best.items():
        lines.append(f"| {p} | {'global' if sync else 'per process'} | {b['threads']} | {per_step[(p, sync)]:.3f} | "
                     f"{args.batch / per_step[(p, sync)]:.0f} | {single / per_step[(p, sync)]:.2f}x |")
    lines.append("\nAll runs (s): " + "; ".join(f"{p} x {'global' if sync else 'per-process'} BN: "
                                              + ", ".join(f"{r['seconds']:.1f}" for r in rs)
                                              for (p, sync), rs in runs.items()))
    report("\n".join(lines) + "\n", args.out)


if __name__ == "__main__":
    main()
