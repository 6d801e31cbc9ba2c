"""Train a model from a config:  python train/train.py --config train/configs/cnn_keras.yaml"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ferlab.training import TrainConfig, command_line, train  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", required=True, help="YAML config in train/configs/")
    parser.add_argument("--data", help="data source (default: FERLAB_DATA, the local copy, or the Hub)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs")
    parser.add_argument("--out", help="output folder (default runs/<name>)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/state.pt")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    cfg = TrainConfig.from_file(args.config, epochs=args.epochs, seed=args.seed)
    out = train(cfg, source=args.data, out_dir=args.out, resume=args.resume, command=command_line(),
                progress=not args.no_progress)
    print(f"exported {out}")


if __name__ == "__main__":
    main()
