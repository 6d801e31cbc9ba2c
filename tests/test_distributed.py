"""Training on several processes: ``torchrun --standalone --nproc_per_node=2`` on CPU (gloo, loopback)
matches one process with the same global batch and seed, writes its outputs once, and resumes
across process counts.  The same tests run the GPU path (NCCL, mixed precision) where CUDA is."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from ferlab.distributed import Context, shard

# ``smooth`` (tests/ddp_train.py): no max-pool or ReLU near-ties, so two correct runs stay within float
# tolerance; no dropout (its masks are drawn per process: equal in distribution, not in value);
# BatchNorm over the global batch; the 'basic' augmentation, so per-image augmentation seeds are exercised
LAUNCHER = str(Path(__file__).with_name("ddp_train.py"))
RECIPE = dict(name="ddp", architecture="smooth", model={"width": 8},
              augmentation="basic", batch_size=16, epochs=3, optimizer="adam", lr=3e-3, schedule="plateau",
              plateau_patience=1, sync_batchnorm=True, select_on="loss", seed=5)
TOLERANCE = dict(rtol=1e-4, atol=2e-5)


def _run(tmp_path, tiny_source, out, processes, epochs, resume=False, **overrides):
    cfg = tmp_path / f"{out.name}-{processes}-{epochs}.yaml"
    cfg.write_text(yaml.safe_dump({**RECIPE, **overrides}))
    args = [LAUNCHER, "--config", str(cfg), "--data", str(tiny_source), "--out", str(out),
            "--epochs", str(epochs), "--no-progress"] + (["--resume"] if resume else [])
    if processes > 1:
        args = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] + args
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def _weights(out):
    return torch.load(out / "state.pt", map_location="cpu", weights_only=True)["model"]


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.allclose(wa[k].float(), wb[k].float(), **TOLERANCE), (k, (wa[k].float() - wb[k].float()).abs().max())


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_source):
    tmp = tmp_path_factory.mktemp("single")
    out = tmp / "single"
    _run(tmp, tiny_source, out, 1, 3, loader_workers=0)
    return out


def test_two_processes_match_one_and_write_once(tmp_path, tiny_source, single):
    out = tmp_path / "two"
    stdout = _run(tmp_path, tiny_source, out, 2, 3, loader_workers=1)
    _assert_same_weights(single, out)
    # written once: one log row per epoch, one epoch line each on stdout (rank 0 speaks), one export
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert sum(line.startswith("epoch=") for line in stdout.splitlines()) == 3
    assert stdout.count("exported ") == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in single.iterdir())
    with open(single / "log.csv") as f:
        reference = list(csv.DictReader(f))
    for got, want in zip(rows, reference):  # validation gathered from both ranks = one process's
        assert float(got["valid_loss"]) == pytest.approx(float(want["valid_loss"]), rel=1e-4)
        assert float(got["valid_acc"]) == float(want["valid_acc"])
    card = (out / "card.json").read_text()
    assert "2 processes x" in card


@pytest.mark.slow
@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)])
def test_resume_across_process_counts(tmp_path, tiny_source, single, first, then):
    out = tmp_path / f"from{first}to{then}"
    _run(tmp_path, tiny_source, out, first, 2, loader_workers=0)
    _run(tmp_path, tiny_source, out, then, 3, resume=True, loader_workers=0)
    _assert_same_weights(single, out)
    with open(out / "log.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == [1, 2, 3]


@pytest.mark.slow
def test_class_weighted_loss_is_the_global_batch_mean(tmp_path, tiny_source):
    """Balanced class weights normalize by the global batch's weight sum, not each rank's."""
    one, two = tmp_path / "w1", tmp_path / "w2"
    _run(tmp_path, tiny_source, one, 1, 1, class_weights="balanced", loader_workers=0)
    _run(tmp_path, tiny_source, two, 2, 1, class_weights="balanced", loader_workers=0)
    _assert_same_weights(one, two)


def test_shards_cover_every_item_once():
    for n in (0, 1, 7, 3589):
        for world in (1, 2, 3):
            parts = [shard(Context(rank, world), n) for rank in range(world)]
            assert [i for p in parts for i in range(n)[p]] == list(range(n))
