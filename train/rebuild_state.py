"""Continue a shipped model whose run folder is lost: rebuild <out>/state.pt from the checkpoint.

    python train/rebuild_state.py --checkpoint vgg19 --config train/configs/vgg19_config4.yaml \
        --out runs/vgg19 [--log results/vgg19/log.csv] [--lr 1e-4]
    python train/train.py --config train/configs/vgg19_config4.yaml --out runs/vgg19 --resume

Run folders (runs/) are not in git, so a new machine starts without them.  The rebuilt state
resumes after the checkpoint's best epoch with its shipped weights, its training log up to that
epoch, its selection and plateau-schedule counters and a fresh optimizer (ferlab.training.rebuild_state).
"""
import argparse
import csv
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from ferlab.checkpoints import resolve  # noqa: E402
from ferlab.training import TrainConfig, rebuild_state  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="shipped checkpoint (name or folder)")
    parser.add_argument("--config", required=True, help="the config that trained it")
    parser.add_argument("--out", required=True, help="run folder to write (must not hold a state.pt)")
    parser.add_argument("--log", help="its training log (default results/<checkpoint name>/log.csv)")
    parser.add_argument("--lr", type=float, help="learning rate from here on (default: the log's last)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if (out / "state.pt").exists():
        parser.error(f"{out / 'state.pt'} exists: resume it with train/train.py --resume instead")
    log = Path(args.log or ROOT / "results" / resolve(args.checkpoint).name / "log.csv")
    with open(log, newline="") as f:
        rows = list(csv.DictReader(f))
    out.mkdir(parents=True, exist_ok=True)
    rebuild_state(TrainConfig.from_file(args.config), args.checkpoint, rows, out, lr=args.lr)
    print(f"wrote {out / 'state.pt'}: resume with python train/train.py --config {args.config} --out {out} --resume")


if __name__ == "__main__":
    main()
