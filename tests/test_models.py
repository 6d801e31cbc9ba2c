import pytest
import torch
from torch import nn

from ferlab.models import create_model, list_architectures
from ferlab.models.vgg import PretrainedWeightsUnavailable


@pytest.mark.parametrize("name", list_architectures())
def test_forward_backward_at_48(name):
    torch.manual_seed(0)
    model = create_model(name)
    x = model.example_input(2).normal_()
    logits = model(x)
    assert logits.shape == (2, 7)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", list_architectures())
def test_explainable_layers_are_spatial_and_ordered(name):
    model = create_model(name).eval()
    assert model.default_layer in model.explainable_layers
    shapes = {}
    # transformer layers output tokens; feature_map lays them out on the patch grid
    hooks = [model.get_layer(n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, model.feature_map(o).shape))
             for n in model.explainable_layers]
    model(model.example_input(1))
    for h in hooks:
        h.remove()
    sides = [shapes[n][-1] for n in model.explainable_layers]
    assert all(len(shapes[n]) == 4 for n in model.explainable_layers)
    assert sides == sorted(sides, reverse=True), "layers must go shallow to deep"
    assert shapes[model.default_layer][-1] >= 3, "default Grad-CAM layer must keep a spatial map"


@pytest.mark.parametrize("name", list_architectures())
def test_cam_support_is_gap_plus_single_linear(name):
    model = create_model(name).eval()
    if not model.supports_cam:
        return
    linear = model.get_layer(model.cam_linear)
    assert isinstance(linear, nn.Linear) and linear.out_features == 7
    feats = {}
    model.get_layer(model.cam_layer).register_forward_hook(lambda m, i, o: feats.__setitem__("a", o))
    x = model.example_input(1).normal_()
    logits = model(x)
    # logits == W . GAP(A) + b exactly when the head is GAP + one linear layer
    manual = linear(feats["a"].mean(dim=(2, 3)))
    assert torch.allclose(manual, logits, atol=1e-5)


def test_cam_support_flags():
    assert create_model("mobilenet_v2").supports_cam and create_model("resnet18").supports_cam
    assert not create_model("cnn").supports_cam and not create_model("resnet_se").supports_cam


def test_vgg_fine_tune_layers_freezes_all_but_last_n():
    model = create_model("vgg19", fine_tune_layers=5)
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert len(convs) == 16
    assert [all(p.requires_grad for p in c.parameters()) for c in convs] == [False] * 11 + [True] * 5
    assert all(p.requires_grad for p in model.classifier.parameters())
    frozen = create_model("vgg19", fine_tune_layers=0)
    assert not any(p.requires_grad for p in frozen.features.parameters())


def test_vgg_batch_norm_variant_explains_the_relu_after_each_conv():
    plain, bn = create_model("vgg19"), create_model("vgg19", batch_norm=True)
    # the plain net keeps its layer names and card config (checkpoints trained before the option)
    assert plain.explainable_layers[:3] == ("features.1", "features.3", "features.6")
    assert "batch_norm" not in plain.config and bn.config["batch_norm"] is True
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.features) == 16
    assert len(bn.explainable_layers) == 16
    for name in bn.explainable_layers:
        index = int(name.split(".")[1])
        assert isinstance(bn.get_layer(name), nn.ReLU)
        assert isinstance(bn.features[index - 1], nn.BatchNorm2d) and isinstance(bn.features[index - 2], nn.Conv2d)
    assert create_model("vgg19", **bn.config).config == bn.config


def test_pretrained_unreachable_fails_clearly(monkeypatch):
    import torchvision.models._api as api

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    monkeypatch.setattr(api.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=False"):
        create_model("vgg19", pretrained=True)


def test_configurable_sizes():
    m = create_model("resnet_se", width=16, input_size=64)
    assert m(torch.zeros(1, 1, 64, 64)).shape == (1, 7)
    assert create_model("cnn", in_channels=3)(torch.zeros(2, 3, 48, 48)).shape == (2, 7)
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("vit_huge")
