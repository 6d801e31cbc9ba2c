import numpy as np
import pytest
import torch

from ferlab.checkpoints import INT8_SCALE, base_card, dequantize_int8, quantize_int8, save_checkpoint
from ferlab.models import create_model
from ferlab.preprocess import normalize
from ferlab.quantization import gptq_codes, gptq_int8
from ferlab import load_model
from tests.synthetic import make_arrays

CARD = {"mean": [0.5], "std": [0.25]}


def _net(architecture, **cfg):
    torch.manual_seed(0)
    model = create_model(architecture, **cfg).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2)
    return model


def _logit_error(model, state, images):
    x = normalize(torch.from_numpy(images).unsqueeze(1), CARD)
    with torch.no_grad():
        reference = model(x)
        quantized = _net_like(model, state)(x)
    return (quantized - reference).pow(2).mean().item()


def _net_like(model, state):
    import copy
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other.eval()


def test_gptq_codes_beat_nearest_rounding_on_the_output_of_one_layer():
    # correlated inputs: where compensating rounding errors pays, and nearest rounding cannot
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4000, 8, generator=gen) @ torch.randn(8, 64, generator=gen)
    w = torch.randn(32, 64, generator=gen)
    H = (x.T @ x).double().unsqueeze(0)
    nearest = quantize_int8({"w": w})
    scale = nearest["w" + INT8_SCALE]
    codes = gptq_codes(w, H)
    assert codes.dtype == torch.int8 and codes.abs().max() <= 127
    out_error = lambda c: ((x @ (c.float() * scale[:, None]).T) - x @ w.T).pow(2).mean().item()
    assert out_error(codes) < 0.5 * out_error(nearest["w"])
    # with uncorrelated inputs (H diagonal) there is nothing to compensate: nearest rounding
    assert torch.equal(gptq_codes(w, torch.eye(64, dtype=torch.float64).unsqueeze(0)), nearest["w"])


@pytest.mark.parametrize("architecture,cfg", [("cnn", {"widths": [8, 16, 16, 16], "hidden": 32}),
                                              ("mobilenet_v2", {"width_mult": 0.25})])  # depthwise: groups
def test_gptq_int8_keeps_the_file_format_and_lowers_the_output_error(architecture, cfg):
    model = _net(architecture, **cfg)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images, _ = make_arrays(24, seed=1)
    calibration, held_out = images[:96], images[96:]
    encoded = gptq_int8(model, calibration, CARD, batch_size=32)
    nearest = quantize_int8(model.state_dict())
    assert encoded.keys() == nearest.keys()
    for key, value in nearest.items():
        assert encoded[key].dtype == value.dtype and encoded[key].shape == value.shape, key
        if key.endswith(INT8_SCALE) or value.dtype != torch.int8:
            assert torch.equal(encoded[key], value), key  # same scales, BatchNorm and biases untouched
    assert any(not torch.equal(encoded[k], nearest[k]) for k in nearest if nearest[k].dtype == torch.int8)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key  # the model passed in is not changed
    gptq_error = _logit_error(model, dequantize_int8(encoded), held_out)
    nearest_error = _logit_error(model, dequantize_int8(nearest), held_out)
    assert gptq_error < nearest_error


def test_gptq_weights_save_and_load_as_they_were_measured(tmp_path):
    model = _net("cnn", widths=[8, 16, 16, 16], hidden=32)
    images, _ = make_arrays(8)
    encoded = gptq_int8(model, images, CARD)
    folder = save_checkpoint(model, base_card(model, CARD["mean"], CARD["std"]), tmp_path / "q", storage="int8",
                             tensors=encoded)
    loaded = load_model(folder, device="cpu")
    assert loaded.card["storage_dtype"] == "int8"
    expected = dequantize_int8(encoded)
    for name, w in loaded.module.state_dict().items():
        assert torch.equal(w, expected[name]), name
    with pytest.raises(ValueError, match="tensors"):
        save_checkpoint(model, {"architecture": "cnn"}, tmp_path / "bad", storage="int8",
                        tensors={k: v for k, v in encoded.items() if not k.endswith(INT8_SCALE)})


def test_each_layer_is_calibrated_on_what_the_rounded_layers_before_it_give():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32))
    images = np.random.default_rng(0).integers(0, 256, (200, 4, 4), dtype=np.uint8)
    encoded = gptq_int8(net, images, CARD)
    x = normalize(torch.from_numpy(images).unsqueeze(1), CARD).flatten(1)
    first = dequantize_int8({k: encoded[k] for k in ("1.weight", "1.weight" + INT8_SCALE)})["1.weight"]
    hidden = torch.relu(x @ first.T + net[1].bias).detach()  # layer 1 as rounded, not as float32
    expected = gptq_codes(net[3].weight, (hidden.T @ hidden).double().unsqueeze(0))
    assert torch.equal(encoded["3.weight"], expected)
    float_hidden = torch.relu(net[1](x)).detach()
    assert not torch.equal(gptq_codes(net[3].weight, (float_hidden.T @ float_hidden).double().unsqueeze(0)), expected)


def test_storage_benchmark_scores_gptq_beside_nearest_rounding(tiny_source, tmp_path):
    from benchmarks import storage
    model = _net("cnn", widths=[8, 16, 16, 16], hidden=32)
    folder = save_checkpoint(model, base_card(model, CARD["mean"], CARD["std"]), tmp_path / "tiny")
    out = tmp_path / "storage.md"
    storage.main(["--checkpoint", str(folder), "--source", str(tiny_source), "--out", str(out)])
    rows = [line for line in out.read_text().splitlines() if line.startswith(f"| {folder} |")]
    assert [r.split(" | ")[1] for r in rows] == ["float32", "float16", "int8", "int8 gptq"]
    assert all(r.count("%") == 2 for r in rows)  # PublicTest and PrivateTest for each

    # --merge re-measures the named model and keeps the other models' rows, alphabetically grouped
    lines = out.read_text().splitlines()
    kept = "| zzz_other | float32 | 1.0 MB | 50.00% | 51.00% | 0.0000 |"
    stale = f"| {folder} | float32 | 9.9 MB | 1.00% | 1.00% | 0.0000 |"
    out.write_text("\n".join([*lines[:2], stale, lines[-1], kept]) + "\n")
    storage.main(["--checkpoint", str(folder), "--source", str(tiny_source), "--out", str(out), "--merge"])
    merged = out.read_text().splitlines()
    assert merged[:2] == lines[:2] and stale not in merged  # folder (a /tmp path) sorts before zzz_other
    assert [line.split(" | ")[1] for line in merged[2:6]] == ["float32", "float16", "int8", "int8 gptq"]
    assert all(line.startswith(f"| {folder} |") for line in merged[2:6])
    assert merged[6] == kept and merged[-2:] == lines[-2:]  # the size-only rows stay last
    # --drop-missing: a model that is no longer a checkpoint (retired) leaves the table
    from benchmarks.storage import merge_rows
    assert kept not in merge_rows(merged, merged[:2], present={str(folder)})
    assert kept in merge_rows(merged, merged[:2], present={"zzz_other"})


def test_gptq_codes_do_not_depend_on_the_callers_memory_layout(monkeypatch):
    # load_model hands out channels-last nets on the CPU, training exports contiguous ones: the same
    # weights must give the same file (on vgg19 the layouts' rounding moved 3 PublicTest answers)
    import ferlab.quantization as quantization
    model = _net("cnn", widths=[8, 16, 16, 16], hidden=32)
    images, _ = make_arrays(16, seed=2)
    contiguous = gptq_int8(model, images, CARD)
    layouts = []
    hessian = quantization._input_hessian

    def recording(module, layer, *args):
        layouts.append(all(p.is_contiguous() for p in module.parameters()))
        return hessian(module, layer, *args)

    monkeypatch.setattr(quantization, "_input_hessian", recording)
    channels_last = gptq_int8(model.to(memory_format=torch.channels_last), images, CARD)
    assert layouts and all(layouts)  # calibrated on a contiguous copy
    for key, value in contiguous.items():
        assert torch.equal(channels_last[key], value), key
