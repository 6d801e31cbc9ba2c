import json
import pickle

import numpy as np
import pytest
import torch

from ferlab import CheckpointError, list_models, load_model
from ferlab.checkpoints import base_card, pick_device, save_checkpoint
from ferlab.models import create_model
from ferlab.preprocess import InputError
from tests.synthetic import make_arrays

TINY = {"widths": [8, 16, 16, 16], "hidden": 32}


def _saved(tmp_path, name="tiny", storage="float32", **cfg):
    torch.manual_seed(1)
    model = create_model("cnn", **(cfg or TINY)).eval()
    for m in model.modules():  # non-trivial BatchNorm statistics must survive the round trip
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    card = base_card(model, [0.5], [0.5])
    return model, save_checkpoint(model, card, tmp_path / name, storage=storage)


def test_round_trip_is_exact(tmp_path):
    model, folder = _saved(tmp_path)
    loaded = load_model(folder, device="cpu")
    assert loaded.card["architecture"] == "cnn" and loaded.card["params"] == sum(p.numel() for p in model.parameters())
    for k, v in model.state_dict().items():
        assert torch.equal(v, loaded.module.state_dict()[k]), k
    x = torch.randn(4, 1, 48, 48)
    model.to(memory_format=torch.channels_last)  # load_model uses channels-last on the CPU
    assert torch.equal(model(x), loaded.module(x))
    assert not loaded.module.training


def test_half_storage_round_trip(tmp_path):
    model, folder = _saved(tmp_path, storage="float16")
    loaded = load_model(folder, device="cpu")
    assert loaded.card["storage_dtype"] == "float16"
    x = torch.randn(4, 1, 48, 48)
    assert torch.allclose(model(x), loaded.module(x), atol=5e-2)
    assert loaded.module.features.conv1[0].weight.dtype == torch.float32


def test_predict_returns_probabilities(tmp_path):
    _, folder = _saved(tmp_path)
    images, _ = make_arrays(2)
    model = load_model(folder)
    probs = model.predict(list(images), detect=False)
    assert probs.shape == (14, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert model.predict(images[:1], detect=False).shape == (1, 7)
    with pytest.raises(InputError, match="pass \\[image\\]"):
        model.predict(images[0])  # one image is a batch of one: explicit, never guessed


def test_list_models_and_names(tmp_path, monkeypatch):
    _saved(tmp_path, "alpha")
    _saved(tmp_path, "beta")
    (tmp_path / "not_a_model").mkdir()
    monkeypatch.setenv("FERLAB_CHECKPOINTS", str(tmp_path))
    assert list_models() == ["alpha", "beta"]
    assert load_model("beta").name == "beta"
    with pytest.raises(CheckpointError, match="available: alpha, beta"):
        load_model("gamma")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))  # would create a file if ever unpickled


def test_pickled_checkpoints_are_refused_and_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps({"state_dict": _Exploit(str(marker))}))
    with pytest.raises(CheckpointError, match="never unpickles"):
        load_model(evil)
    folder = tmp_path / "evil_folder"
    folder.mkdir()
    (folder / "model.pth").write_bytes(evil.read_bytes())
    (folder / "card.json").write_text(json.dumps({"architecture": "cnn", "config": TINY}))
    with pytest.raises(CheckpointError, match="pickled checkpoints are refused"):
        load_model(folder)
    # a pickle renamed to .safetensors is not unpickled either: it is just corrupt
    (folder / "model.safetensors").write_bytes(evil.read_bytes())
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)
    assert not marker.exists()


def test_corrupt_truncated_and_mismatched(tmp_path):
    _, folder = _saved(tmp_path)
    weights = folder / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(folder)
    _, folder = _saved(tmp_path, "mismatch")
    card = json.loads((folder / "card.json").read_text())
    card["config"]["widths"] = [16, 16, 16, 16]
    (folder / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="do not match the card"):
        load_model(folder)
    (folder / "card.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_model(folder)


def test_device_choice(monkeypatch):
    monkeypatch.setenv("FERLAB_DEVICE", "cpu")
    assert pick_device().type == "cpu"
    monkeypatch.delenv("FERLAB_DEVICE")
    expected = "cuda" if torch.cuda.is_available() else None
    if expected:
        assert pick_device().type == expected
    else:
        assert pick_device().type in ("cpu", "mps")


def test_training_summary_counts_the_checkpoint_a_fine_tune_started_from():
    from ferlab.cards import training_summary
    card = {"training": {"epochs_run": 12, "wall_seconds": 1800, "hardware": "cpu"}}
    assert training_summary(card) == "12 epochs, 0.5 h on cpu"
    card["training"]["initialized_from"] = {"name": "cnn", "epochs_run": 60, "wall_seconds": 9000}
    assert training_summary(card) == "12 epochs after cnn's 60, 3.0 h on cpu"
    assert training_summary({}) == "not recorded"


def test_int8_storage_round_trip_is_close_and_small(tmp_path):
    model, folder = _saved(tmp_path, storage="int8")
    _, exact = _saved(tmp_path, "exact")
    loaded = load_model(folder, device="cpu")
    assert loaded.card["storage_dtype"] == "int8"
    assert (folder / "model.safetensors").stat().st_size < 0.35 * (exact / "model.safetensors").stat().st_size
    state = loaded.module.state_dict()
    for name, w in model.state_dict().items():
        assert state[name].dtype == w.dtype, name
        if w.is_floating_point() and w.dim() >= 2:  # quantized: within half a step of its channel's scale
            step = w.abs().flatten(1).amax(1) / 127
            err = (state[name] - w).abs().flatten(1).amax(1)
            assert torch.all(err <= step / 2 + 1e-7), name
            assert not torch.equal(state[name], w)
        else:  # biases and BatchNorm statistics are kept exactly
            assert torch.equal(state[name], w), name
    x = torch.randn(4, 1, 48, 48)
    assert torch.allclose(torch.softmax(model(x), 1), torch.softmax(loaded.module(x), 1), atol=2e-2)


def test_int8_scales_that_match_no_tensor_are_refused(tmp_path):
    from safetensors.torch import load_file, save_file
    _, folder = _saved(tmp_path, storage="int8")
    tensors = load_file(str(folder / "model.safetensors"))
    scale = next(k for k in tensors if k.endswith(".int8_scale"))
    tensors[scale] = torch.ones(tensors[scale].numel() + 1)
    save_file(tensors, str(folder / "model.safetensors"))
    with pytest.raises(CheckpointError, match="int8_scale"):
        load_model(folder)
    with pytest.raises(ValueError, match="storage"):
        save_checkpoint(create_model("cnn", **TINY), {"architecture": "cnn"}, tmp_path / "x", storage="int4")
