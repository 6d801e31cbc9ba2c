import threading

import numpy as np
import pytest
import torch
from captum.attr import LayerGradCam

from ferlab.explain import (METHODS, ExplainError, explain, explain_layers, faithfulness, region_masks,
                            region_shares, region_words, sanity_check)
from ferlab.explain.core import Method, register_method
from ferlab.models import create_model
from tests.explain_models import quadrant_model, wrap
from tests.synthetic import MARKS, face

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (48, 48), dtype=np.uint8)
CNN_METHODS = sorted(m for m, c in METHODS.items() if "attention" not in c.requires)  # tests/test_vit.py: the rest


def quadrant_mass(heatmap):
    h = heatmap.shape[0] // 2
    return heatmap[:h, :h].sum() / max(heatmap.sum(), 1e-12)


@pytest.mark.parametrize("method", CNN_METHODS)
def test_every_method_shape_range_and_fields(method):
    model = quadrant_model()
    e = explain(model, IMAGE, method, target=3)
    assert e.heatmap.shape == (48, 48) and e.heatmap.dtype == np.float32
    assert 0.0 <= e.heatmap.min() and e.heatmap.max() <= 1.0
    assert e.method == method and e.target == 3 and e.target_name == "happy"
    assert np.isclose(e.probabilities.sum(), 1.0, atol=1e-5)
    overlay = e.overlay(alpha=0.4, colormap="inferno")
    assert overlay.shape == (48, 48, 3) and overlay.dtype == np.uint8
    assert e.overlay(np.zeros((96, 96, 3), np.uint8)).shape == (96, 96, 3)


@pytest.mark.parametrize("method", ["gradcam", "occlusion", "cam", "integrated_gradients", "saliency",
                                    "gradcam_pp", "layercam"])
def test_known_evidence_region_gets_the_mass(method):
    model = quadrant_model()
    for target in range(7):
        e = explain(model, IMAGE, method, target=target)
        assert e.heatmap.max() > 0
        assert quadrant_mass(e.heatmap) > 0.9, (method, target, quadrant_mass(e.heatmap))


def test_target_by_index_name_and_default():
    model = quadrant_model()
    assert explain(model, IMAGE, target="surprise").target == 5
    assert explain(model, IMAGE, target="Happiness").target == 3
    e = explain(model, IMAGE)
    assert e.target == int(np.argmax(e.probabilities)) == e.predicted
    with pytest.raises(ExplainError):
        explain(model, IMAGE, target="bored")
    with pytest.raises(ExplainError):
        explain(model, IMAGE, target=9)


def test_batches_and_layers_and_errors():
    model = quadrant_model()
    out = explain(model, [IMAGE, IMAGE[::-1]], "gradcam", target=[0, 1])
    assert [e.target for e in out] == [0, 1]
    assert np.allclose(out[0].heatmap, explain(model, IMAGE, "gradcam", target=0).heatmap, atol=1e-5)
    model.module.calls = 0
    out = explain(model, [IMAGE] * 3, "gradcam")
    assert model.module.calls == 1, "probabilities and maps of a whole batch from one forward pass"
    assert np.allclose([e.probabilities for e in out], model.predict([IMAGE] * 3, detect=False), atol=1e-5)
    with pytest.raises(ExplainError, match="no explainable layer"):
        explain(model, IMAGE, "gradcam", layer="fc")
    with pytest.raises(ExplainError, match="unknown method"):
        explain(model, IMAGE, "magic")
    with pytest.raises(ExplainError, match="CAM exists only"):
        explain(model, IMAGE, "cam", layer="features.1")
    cnn = wrap(create_model("cnn"), "cnn")
    with pytest.raises(ExplainError, match="CAM needs global average pooling"):
        explain(cnn, IMAGE, "cam")
    with pytest.raises(ExplainError, match="rollout cannot explain cnn: attention rollouts read a transformer"):
        explain(cnn, IMAGE, "rollout")


def test_cam_equals_gradcam_up_to_scale_at_the_last_layer():
    for model in (quadrant_model(), wrap(create_model("mobilenet_v2")), wrap(create_model("resnet18"))):
        torch.manual_seed(0)
        for target in (0, 3, 6):
            cam = explain(model, IMAGE, "cam", target=target)
            grad = explain(model, IMAGE, "gradcam", target=target)
            h, w = cam.raw.shape[-2:]
            assert np.allclose(np.maximum(cam.raw, 0), grad.raw * h * w, rtol=1e-4, atol=1e-6)
            assert np.allclose(cam.heatmap, grad.heatmap, atol=1e-4)


@pytest.mark.parametrize("name, config", [("cnn", {}), ("resnet_se", {}), ("vgg19", {}),
                                          ("vgg19", {"batch_norm": True}), ("mobilenet_v2", {}), ("resnet18", {})])
def test_every_architecture_every_layer(name, config):
    torch.manual_seed(0)
    model = wrap(create_model(name, **config), name)
    layers = explain_layers(model, IMAGE, "gradcam", target=2)
    assert [e.layer for e in layers] == list(model.module.explainable_layers)
    x = model.preprocess([IMAGE])
    for e in layers[-3:]:  # the one-pass path equals Captum's LayerGradCam layer by layer
        single = explain(model, IMAGE, "gradcam", layer=e.layer, target=2)
        assert np.allclose(single.heatmap, e.heatmap, atol=1e-4), e.layer
        captum = LayerGradCam(model.module, model.module.get_layer(e.layer)).attribute(
            x, target=2, relu_attributions=True).detach().numpy()[0]
        assert np.allclose(single.raw, captum, rtol=1e-4, atol=1e-6), e.layer
    acts = explain_layers(model, IMAGE, "activations", top_k=4)
    assert all(len(a.extra["channels"]) == 4 for a in acts)
    assert explain(model, IMAGE, "guided_gradcam").heatmap.shape == (48, 48)


def test_explain_layers_other_methods_and_cam():
    model = quadrant_model()
    assert len(explain_layers(model, IMAGE, "layercam")) == 2
    assert [e.layer for e in explain_layers(model, IMAGE, "cam")] == ["features"]
    with pytest.raises(ExplainError, match="explains the input pixels"):
        explain_layers(model, IMAGE, "saliency")


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(getattr(m, "_backward_pre_hooks", {})) for m in module.modules())


@pytest.mark.parametrize("method", CNN_METHODS)
def test_no_hook_survives_even_after_an_exception(method):
    model = quadrant_model()
    assert _hooks(model.module) == 0
    explain(model, IMAGE, method)
    assert _hooks(model.module) == 0
    model.module.calls = 0
    explain(model, IMAGE, method)
    passes = model.module.calls  # Grad-CAM: one (forward and backward together); others: 2 or more
    assert passes >= 1
    for failing in sorted({1, passes}):  # the first forward pass raises, then the attribution's own
        model.module.calls, model.module.fail_on_call = 0, failing
        with pytest.raises(RuntimeError, match="boom"):
            explain(model, IMAGE, method)
        assert _hooks(model.module) == 0
    model.module.fail_on_call = None
    model.module.calls, model.module.fail_on_call = 0, 1
    with pytest.raises(RuntimeError, match="boom"):
        explain_layers(model, IMAGE, "gradcam")
    assert _hooks(model.module) == 0


def test_concurrent_calls_match_serial():
    model = wrap(create_model("resnet_se"), "resnet_se")
    images = [RNG.integers(0, 256, (48, 48), dtype=np.uint8) for _ in range(6)]
    jobs = [(img, method) for img in images for method in ("gradcam", "guided_gradcam", "activations")]
    serial = [explain(model, img, method).heatmap for img, method in jobs]
    serial_probs = model.predict(images)
    results, probs, errors = [None] * len(jobs), [], []

    def work(i):
        try:
            results[i] = explain(model, jobs[i][0], jobs[i][1]).heatmap
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def predict_loop():
        for _ in range(10):
            probs.append(model.predict(images))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))] + \
              [threading.Thread(target=predict_loop)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got, want in zip(results, serial):
        assert np.array_equal(got, want)
    assert all(np.array_equal(p, serial_probs) for p in probs)


def test_faithfulness_prefers_the_true_region():
    model = quadrant_model()
    e = explain(model, IMAGE, "occlusion", target=0)
    f = faithfulness(model, IMAGE, e, steps=16)
    assert f.deletion.shape == (17,) and f.insertion.shape == (17,)
    assert f.deletion[0] == pytest.approx(e.probabilities[0], abs=1e-5)
    # removing the quadrant's pixels first changes the score faster than random orders do
    first = abs(f.deletion[4] - f.deletion[0])
    assert first > 0
    assert abs(f.deletion_auc - f.deletion[0]) > abs(f.random_deletion_auc - f.deletion[0])


@pytest.fixture
def image_only_method():
    @register_method
    class InputIntensity(Method):  # an "explanation" that ignores the model entirely
        name = "input_intensity"
        needs_layer = False

        def attribute(self, module, x, target, layer, model):
            return x - x.min()
    yield "input_intensity"
    METHODS.pop("input_intensity")


def test_sanity_check_separates_model_dependent_from_image_only(trained_marks, image_only_method):
    rng = np.random.default_rng(7)
    img = face(3, rng)
    mark = np.zeros((48, 48), bool)
    r, c = MARKS[3]
    mark[r:r + 12, c:c + 12] = True
    e = explain(trained_marks, img, "gradcam", layer="features.conv6", target=3)
    assert e.predicted == 3
    assert e.heatmap[mark].sum() / e.heatmap.sum() > 2 * mark.mean()  # the trained model looks at the mark
    good = sanity_check(trained_marks, img, "gradcam", layer="features.conv6", target=3)
    assert good.informative and good.passed and good.correlations[-1] < 0.5
    bad = sanity_check(trained_marks, img, image_only_method, target=3)
    assert not bad.passed and min(bad.correlations) > 0.99 and "WARNING" in bad.message
    # the shared model was not touched by the randomization
    assert explain(trained_marks, img, "gradcam", layer="features.conv6", target=3).heatmap.tolist() == \
        e.heatmap.tolist()
    fig = good.figure()
    assert fig is not None


def test_regions_partition_and_words():
    masks = region_masks(48)
    total = sum(m.astype(int) for m in masks.values())
    assert (total == 1).all()
    assert region_masks(64)["mouth"].shape == (64, 64)
    heat = np.zeros((48, 48), np.float32)
    heat[34:40, 18:30] = 1
    shares = region_shares(heat)
    assert shares["mouth"] == pytest.approx(1.0) and sum(shares.values()) == pytest.approx(1.0)
    assert region_words(heat) == "the mouth"
    assert region_words(np.zeros((48, 48))) == "nowhere in particular"


def test_benchmark_heatmap_agreement_matches_pytorch_grad_cam_and_counts_empty_maps(trained_marks):
    from pytorch_grad_cam import GradCAM
    from benchmarks.explain_speed import heatmap_agreement
    module = trained_marks.module
    images = [face(c, np.random.default_rng(c)) for c in range(7)]
    cam = GradCAM(model=module, target_layers=[module.get_layer(module.default_layer)])
    try:
        corr, both_empty = heatmap_agreement(trained_marks, cam, images)
    finally:
        cam.activations_and_grads.release()
    assert corr > 0.99 and both_empty < 7

    class Empty:  # a reference that never finds evidence: disagreement unless ours is empty too
        def __call__(self, input_tensor, targets):
            return np.zeros((1, 48, 48), dtype=np.float32)
    corr, both_empty = heatmap_agreement(trained_marks, Empty(), images)
    maps = [explain(trained_marks, im, "gradcam").heatmap for im in images]
    assert both_empty == sum(m.max() <= 0 for m in maps) < 7  # the first call saw evidence in ours
    assert corr == 0.0
