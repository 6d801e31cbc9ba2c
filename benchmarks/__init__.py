"""Benchmark scripts: each measures one thing side by side and prints a markdown table."""
import argparse
from pathlib import Path


def device_label() -> str:
    """Where the measured code ran, as the tables state it."""
    import torch
    # the vector ISA torch dispatches to moves CPU times several-fold (README: the AVX2-only machine)
    return ("CUDA" if torch.cuda.is_available()
            else f"CPU ({torch.backends.cpu.get_cpu_capability()}, {torch.get_num_threads()} threads)")


ROOT = Path(__file__).resolve().parent.parent


def sync_readme(section: str, text: str, readme: Path = ROOT / "README.md") -> bool:
    """Put ``text`` between the README's ``<!-- section:start -->`` and ``<!-- section:end -->``
    markers, so that the published table is the measured one; False when there are no such markers."""
    start, end = f"<!-- {section}:start -->", f"<!-- {section}:end -->"
    content = readme.read_text()
    if start not in content or end not in content:
        return False
    readme.write_text(content[:content.index(start) + len(start)] + "\n" + text.rstrip("\n") + "\n"
                      + content[content.index(end):])
    return True


def report(text: str, out: str | None) -> None:
    """Print a result table and, with ``--out``, write it to that file too; a table written to
    ``results/<name>.md`` of this repository also replaces the README's ``<name>`` section, if any."""
    print(text)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
        if Path(out).resolve().parent == ROOT / "results":
            sync_readme(Path(out).stem, text)


def checkpoints_parser(doc: str) -> argparse.ArgumentParser:
    """The options of a benchmark over shipped checkpoints: ``--checkpoint`` (repeatable; default
    every shipped checkpoint), ``--source`` (data) and ``--out`` (markdown file)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append", help="default: every shipped checkpoint")
    parser.add_argument("--source")
    parser.add_argument("--out")
    return parser
