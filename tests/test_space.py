"""`ferlab-space export` writes a Space folder that deploys: full Spaces YAML, runtime-only
requirements, binaries through Xet/LFS, and an app that boots from the folder alone."""
import json
import os
import urllib.request

import pytest
import yaml

from benchmarks.load import start_app
from ferlab.space import export, main, runtime_requirements
from tests.synthetic import write_tiny_checkpoints

SPACES_KEYS = {"title", "sdk", "sdk_version", "python_version", "app_file", "short_description", "models",
               "datasets", "suggested_hardware", "tags", "license"}


def test_requirements_are_runtime_only():
    names = [r.split(">")[0].split("<")[0].split("=")[0].strip().lower() for r in runtime_requirements()]
    assert {"torch", "torchvision", "captum", "grad-cam", "opencv-python-headless", "safetensors"} <= set(names)
    assert not {"pytest", "hypothesis", "playwright", "cleanlab", "gradio"} & set(names)
    zero = runtime_requirements("zero-a10g")
    assert "torch>=2.8,<2.12" in zero  # ZeroGPU supports torch 2.8-2.11


def test_export_writes_a_space_that_boots_from_its_own_folder(tmp_path):
    ck = write_tiny_checkpoints(tmp_path / "ck")
    dest = export(tmp_path / "space", checkpoints=ck)
    readme = (dest / "README.md").read_text()
    _, front, body = readme.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert SPACES_KEYS <= set(meta) and meta["sdk"] == "gradio" and meta["app_file"] == "app.py"
    assert meta["python_version"] in ("3.10", "3.12") and len(meta["short_description"]) <= 60
    assert "not for decisions" in body or "decisions about people" in body
    assert "*.safetensors filter=lfs" in (dest / ".gitattributes").read_text()
    assert sorted(p.name for p in (dest / "checkpoints").iterdir()) == ["tiny_cnn", "tiny_mobilenet"]
    images = [p for p in dest.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg")]
    assert {p.parent.name for p in images} <= {"assets"}  # photos: only the licensed examples
    assert not [p for p in dest.rglob("*.png") if "results" not in p.parts]  # plots only, beside the cards
    assert (dest / "ferlab" / "assets" / "LICENSES.md").exists()
    with pytest.raises(SystemExit, match="not empty"):
        export(dest, checkpoints=ck)

    # the folder alone: its own ferlab package and checkpoints (the repository's are other models)
    env = {k: v for k, v in os.environ.items() if k != "FERLAB_CHECKPOINTS"}
    proc, url = start_app(log_path=str(tmp_path / "app.log"), cwd=dest, timeout=90,
                          extra_env={"PYTHONPATH": "", **{k: env[k] for k in ("PATH",) if k in env}})
    try:
        config = json.loads(urllib.request.urlopen(url + "config", timeout=10).read())
        text = json.dumps(config)
        assert "tiny_cnn" in text and "ferlab_photo" not in text
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_cli_refuses_a_missing_checkpoint(tmp_path):
    ck = write_tiny_checkpoints(tmp_path / "ck")
    with pytest.raises(SystemExit, match="no checkpoint"):
        main(["export", str(tmp_path / "s"), "--checkpoints", str(ck), "--model", "nope"])
