"""Train a recipe:  ferlab-train --config train/configs/resnet_se.yaml [--resume]

A folder of configs is a multi-stage recipe (``train/configs/ferlab_best/``): its stages run in
file-name order, each into ``runs/<its name>``, and a stage whose run is already exported is
skipped, so an interrupted pipeline continues with ``--resume``.  A stage with a ``soup`` list
averages the weights of earlier stages' runs instead of training (``ferlab.soup``).

On several processes or GPUs:  torchrun --nproc_per_node=N -m ferlab.cli.train --config ...
"""
import argparse
from pathlib import Path

from ferlab.checkpoints import CARD_FILE, WEIGHTS_FILE
from ferlab.distributed import launched_as_rank0
from ferlab.soup import SoupConfig, is_soup, make_soup
from ferlab.training import TrainConfig, command_line, train


def stages(config: str | Path) -> list[Path]:
    """The config files of a recipe: the file itself, or a folder's YAML files in name order."""
    config = Path(config)
    if config.is_dir():
        found = sorted(config.glob("*.yaml"))
        if not found:
            raise SystemExit(f"{config} holds no .yaml stages")
        return found
    if not config.exists():
        raise SystemExit(f"no config at {config} (recipes are in train/configs/)")
    return [config]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a YAML recipe, or a folder of numbered stages")
    parser.add_argument("--data", help="data source (default: FERLAB_DATA, the local copy, or the Hub)")
    parser.add_argument("--epochs", type=int, help="override the config's epochs (single config only)")
    parser.add_argument("--out", help="output folder (default runs/<name>; single config only)")
    parser.add_argument("--resume", action="store_true", help="continue from <out>/state.pt")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    files = stages(args.config)
    if len(files) > 1 and (args.out or args.epochs):
        parser.error("--out and --epochs apply to a single config, not a multi-stage recipe")
    say = print if launched_as_rank0() else (lambda *a, **k: None)
    for path in files:
        soup = is_soup(path)
        if soup and len(files) == 1 and (args.epochs or args.seed is not None):
            parser.error(f"{path} is a soup stage: --epochs and --seed do not apply to it")
        if soup and not launched_as_rank0():
            continue  # a soup is a minute of averaging on one process: rank 0 makes it, the others move on
        cfg = SoupConfig.from_file(path) if soup else TrainConfig.from_file(path, epochs=args.epochs, seed=args.seed)
        out_dir = Path(args.out or Path("runs") / cfg.name)
        if len(files) > 1 and (out_dir / WEIGHTS_FILE).exists() and (out_dir / CARD_FILE).exists():
            say(f"{path.name}: {out_dir} is already exported, skipped")
            continue
        if soup:
            out = make_soup(cfg, source=args.data, out_dir=out_dir, command=command_line())
        else:
            out = train(cfg, source=args.data, out_dir=out_dir, resume=args.resume, command=command_line(),
                        progress=not args.no_progress)
        say(f"exported {out}")


if __name__ == "__main__":
    main()
