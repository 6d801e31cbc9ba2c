"""Benchmark scripts: each measures one thing side by side and prints a markdown table."""
import argparse
from pathlib import Path


def device_label() -> str:
    """Where the measured code ran, as the tables state it."""
    import torch
    return "CUDA" if torch.cuda.is_available() else f"CPU ({torch.get_num_threads()} threads)"


def report(text: str, out: str | None) -> None:
    """Print a result table and, with ``--out``, write it to that file too."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)


def checkpoints_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark over shipped checkpoints: ``--checkpoint`` (repeatable; default
    every shipped checkpoint), ``--source`` (data) and ``--out`` (markdown file)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", help="default: every shipped checkpoint")
    parser.add_argument("--source")
    parser.add_argument("--out")
    return parser
