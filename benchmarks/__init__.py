"""Benchmark scripts: each measures one thing side by side and prints a markdown table."""
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
