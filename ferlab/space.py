"""A ready Hugging Face Space folder:  ferlab-space export build/space   (or make space)

The folder holds the app (``app.py`` and the ``ferlab`` package), a ``requirements.txt`` with the
runtime dependencies only (from the installed package's metadata: no test or benchmark tools),
the curated checkpoints, the licence, and a README whose YAML header is the Space's configuration.
Binary files (weights, photos) are listed in ``.gitattributes`` for Xet/LFS storage, which ``hf
upload`` (or ``git push`` with git-xet) applies: the Hub refuses binaries in plain git, and any
file over 10 MB (``vgg19``'s weights are 19 MB).  Deploy:

    make space
    hf auth login
    hf upload <you>/ferlab build/space . --repo-type space

Example photos are ferlab's shipped assets (public domain and CC0, ``ferlab/assets/LICENSES.md``);
no FER2013 image is copied.
"""
from __future__ import annotations

import argparse
import re
import shutil
from importlib import metadata
from pathlib import Path

import yaml

from .audit import SHIPPED_AUDIT
from .checkpoints import CARD_FILE, WEIGHTS_FILE, checkpoints_dir, list_models
from .data import DEFAULT_HUB_ID
from .zoo import SHIPPED

PACKAGE = Path(__file__).resolve().parent
HUB_PLAIN_GIT_LIMIT = 10 * 1024 * 1024  # bytes: larger files go through Xet/LFS on the Hub
PYTHON_VERSION = "3.10"  # ZeroGPU runs 3.10 or 3.12; .ci/run tests 3.10 with the oldest torch
SHORT_DESCRIPTION = "Facial-emotion CNNs and what they look at, with Grad-CAM"  # the Hub allows 60 characters


ZEROGPU_TORCH = {"torch": "torch>=2.8,<2.12", "torchvision": "torchvision>=0.23,<0.27"}  # what ZeroGPU supports


def runtime_requirements(hardware: str = "cpu-basic") -> list[str]:
    """ferlab's runtime dependencies, as pyproject.toml declares them: extras left out, and gradio
    too (the Space's ``sdk_version`` installs it); on ZeroGPU hardware torch stays within 2.8-2.11."""
    try:
        requires = metadata.requires("ferlab") or []
    except metadata.PackageNotFoundError as exc:
        raise SystemExit("ferlab is not installed: run `pip install -e .` (make setup) first") from exc
    kept = []
    for req in requires:
        name = re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0]
        if "extra ==" in req or name == "gradio":
            continue
        kept.append(ZEROGPU_TORCH.get(name, req) if hardware.startswith("zero") else req)
    return kept


def space_readme(models: list[str], hardware: str, hub_models: list[str] | None = None) -> str:
    import gradio
    header = {
        "title": "ferlab", "emoji": "🙂", "colorFrom": "indigo", "colorTo": "green",
        "sdk": "gradio", "sdk_version": gradio.__version__, "python_version": PYTHON_VERSION,
        "app_file": "app.py", "short_description": SHORT_DESCRIPTION, "license": "mit", "pinned": False,
        "suggested_hardware": hardware, "models": list(hub_models or []), "datasets": [DEFAULT_HUB_ID],
        "tags": ["facial-expression-recognition", "explainability", "grad-cam", "fer2013", "ferlab"],
    }
    body = f"""
# ferlab

An explainability lab for facial emotion recognition: classify the faces in a photo, a webcam
stream or a video, and see what each model looked at (Grad-CAM, CAM, layer activations,
attributions from Captum), compare architectures side by side, and read each model's card.

Models: {', '.join(f'`{m}`' for m in models)} (cards in `checkpoints/<name>/README.md`), trained on
FER2013's 48x48 grayscale faces. A predicted expression is not an emotion: do not use these
models for decisions about people.

The Dataset browser needs FER2013: set the Space variable `FERLAB_DATA` to a Hub dataset id
(default `{DEFAULT_HUB_ID}`).
"""
    return "---\n" + yaml.safe_dump(header, sort_keys=False, allow_unicode=True) + "---\n" + body


APP_FILE = '''"""ferlab's Gradio lab on a Hugging Face Space (written by ferlab-space)."""
from ferlab.cli.app import main

if __name__ == "__main__":
    main()
'''


def _copy_package(dest: Path) -> None:
    """The ``ferlab`` package beside ``app.py``, so the Space runs this exact code."""
    shutil.copytree(PACKAGE, dest / "ferlab", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.pyi"))
    (dest / "app.py").write_text(APP_FILE)


def _copy_model_results(name: str, dest: Path) -> None:
    """What the Models tab shows beside a card: training curves, the PrivateTest confusion matrix
    and the region findings (plots and tables; no face image)."""
    results = PACKAGE.parent / "results"
    for rel in (f"{name}/curves.png", f"{name}/test_confusion.png", f"regions/{name}.md", f"regions/{name}.png"):
        if (results / rel).is_file():
            (dest / "results" / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(results / rel, dest / "results" / rel)


def export(dest: str | Path, checkpoints: str | Path | None = None, models: list[str] | None = None,
           hardware: str = "cpu-basic", hub_models: list[str] | None = None) -> Path:
    """Write the Space folder ``dest`` (refused if it exists and is not empty)."""
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise SystemExit(f"{dest} exists and is not empty: choose a new folder")
    source = Path(checkpoints) if checkpoints else checkpoints_dir()
    available = list_models(source)
    chosen = models or [m for m in SHIPPED if m in available] or available
    missing = [m for m in chosen if m not in available]
    if missing or not chosen:
        raise SystemExit(f"no checkpoint {', '.join(missing) or 'at all'} in {source}")
    dest.mkdir(parents=True, exist_ok=True)
    _copy_package(dest)
    if (PACKAGE.parent / "LICENSE").exists():
        shutil.copy2(PACKAGE.parent / "LICENSE", dest / "LICENSE")
    large = []
    for name in chosen:
        out = dest / "checkpoints" / name
        out.mkdir(parents=True)
        for f in (WEIGHTS_FILE, CARD_FILE, "README.md"):
            if (source / name / f).exists():
                shutil.copy2(source / name / f, out / f)
        if (source / name / SHIPPED_AUDIT).is_dir():  # probabilities on FER2013, not images
            shutil.copytree(source / name / SHIPPED_AUDIT, out / SHIPPED_AUDIT)
        _copy_model_results(name, dest)
        if (out / WEIGHTS_FILE).stat().st_size > HUB_PLAIN_GIT_LIMIT:
            large.append(f"checkpoints/{name}/{WEIGHTS_FILE}")
    (dest / "requirements.txt").write_text(
        "# runtime dependencies of ferlab (written by ferlab-space from its package metadata)\n"
        + "\n".join(runtime_requirements(hardware)) + "\n")
    (dest / "README.md").write_text(space_readme(chosen, hardware, hub_models))
    # binary files through Xet/LFS: the Hub refuses binaries in plain git, and any file over 10 MB
    (dest / ".gitattributes").write_text("".join(f"*.{ext} filter=lfs diff=lfs merge=lfs -text\n"
                                                 for ext in ("safetensors", "npz", "jpg", "jpeg", "png")))
    for path in large:
        print(f"{path}: over 10 MB, stored through Xet/LFS (.gitattributes)")
    print(f"wrote {dest} with {', '.join(chosen)}")
    return dest


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    ex = sub.add_parser("export", help="write a Space folder")
    ex.add_argument("dest", help="the folder to write (new or empty)")
    ex.add_argument("--checkpoints", help="where the checkpoints are (default: checkpoints/ or FERLAB_CHECKPOINTS)")
    ex.add_argument("--model", action="append", help="a checkpoint to include (repeatable; default the curated zoo)")
    ex.add_argument("--hardware", default="cpu-basic",
                    help="suggested_hardware in the Space's YAML (cpu-basic, zero-a10g, t4-small, ...)")
    ex.add_argument("--hub-model", action="append",
                    help="a Hub model repo the Space uses, for the YAML's models list (repeatable)")
    args = parser.parse_args(argv)
    export(args.dest, args.checkpoints, args.model, args.hardware, args.hub_model)


if __name__ == "__main__":
    main()

