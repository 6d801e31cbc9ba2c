"""The vision transformers: forward/backward, token-aware explanations and their known answers."""
import numpy as np
import pytest
import torch

from ferlab.explain import METHODS, ExplainError, applicable_methods, explain, explain_layers, sanity_check
from ferlab.explain.attention import attention_rollout, captured_attention, gradient_rollout
from ferlab.models import create_model
from ferlab.models.vgg import PretrainedWeightsUnavailable
from tests.explain_models import wrap

IMAGE = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)
TOKEN_METHODS = applicable_methods({"tokens": True, "supports_cam": False})[0]


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return wrap(create_model("vit"), "vit")


def _hooks(module):
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               + len(m._backward_pre_hooks) for m in module.modules())


@pytest.mark.parametrize("channels", [1, 3])
def test_the_reports_224_configuration_runs_forward_and_backward(channels):
    torch.manual_seed(0)
    model = create_model("vit_tiny_patch16_224", in_channels=channels)
    assert model.grid == (14, 14) and len(model.explainable_layers) == 12 and model.num_heads == 3
    assert 5.4e6 < sum(p.numel() for p in model.parameters()) < 5.8e6  # the report's ~5.7 M
    logits = model(model.example_input(1).normal_())
    assert logits.shape == (1, 7)
    logits.logsumexp(1).sum().backward()
    assert model.vit.patch_embed.proj.weight.grad.abs().sum() > 0


def test_the_48px_vit_is_a_6x6_token_grid_without_cam():
    model = create_model("vit")
    assert model.grid == (6, 6) and model.tokens and not model.supports_cam
    tokens = {}
    model.get_layer(model.default_layer).register_forward_hook(lambda m, i, o: tokens.__setitem__("t", o))
    model.eval()(model.example_input(2))
    assert tokens["t"].shape == (2, 37, 192)  # class token + 36 patches
    grid = model.feature_map(tokens["t"])
    assert grid.shape == (2, 192, 6, 6)
    assert torch.equal(grid[1, :, 2, 3], tokens["t"][1, 1 + 2 * 6 + 3])  # row-major patches after the class token


def test_pretrained_224_weights_unreachable_fail_clearly(monkeypatch):
    import timm

    def offline(*args, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("network unreachable")
        return real(*args, **kwargs)
    real = timm.create_model
    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(PretrainedWeightsUnavailable, match="pretrained=False"):
        create_model("vit_tiny_patch16_224", pretrained=True)


def test_methods_offered_follow_the_model():
    offered, why = applicable_methods({"tokens": True, "supports_cam": False, "architecture": "vit"})
    assert {"gradcam", "rollout", "attention_gradcam"} <= set(offered)
    assert set(why) == {"cam", "guided_gradcam"} and "transformer tokens" in why["guided_gradcam"]
    offered, why = applicable_methods({"tokens": False, "supports_cam": True})
    assert "rollout" not in offered and "cam" in offered and "CNN" in why["rollout"]


@pytest.mark.parametrize("method", TOKEN_METHODS)
def test_every_method_on_an_untrained_vit_shape_and_hook_hygiene(vit, method):
    before = _hooks(vit.module)
    fused = [b.attn.fused_attn for b in vit.module.vit.blocks]
    out = explain(vit, [IMAGE, IMAGE[::-1], IMAGE.T], method, target=[0, 3, 6])
    assert len(out) == 3 and [e.target for e in out] == [0, 3, 6]
    for e in out:
        assert e.heatmap.shape == (48, 48) and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
        assert np.isclose(e.probabilities.sum(), 1, atol=1e-5)
    assert _hooks(vit.module) == before
    assert [b.attn.fused_attn for b in vit.module.vit.blocks] == fused  # the fast path is restored
    if method in ("gradcam", "rollout", "attention_gradcam"):
        assert out[0].raw.shape == (1, 6, 6)


@pytest.mark.parametrize("method", ["cam", "guided_gradcam"])
def test_cnn_only_methods_refuse_the_vit(vit, method):
    with pytest.raises(ExplainError, match="cannot explain vit"):
        explain(vit, IMAGE, method)


def test_attention_hooks_are_removed_after_an_exception(vit, monkeypatch):
    block = vit.module.vit.blocks[3]

    def boom(*a, **k):
        raise RuntimeError("boom")
    monkeypatch.setattr(block.mlp, "forward", boom)
    for method in ("rollout", "attention_gradcam", "gradcam"):
        with pytest.raises(RuntimeError, match="boom"):
            explain(vit, IMAGE, method)
        assert _hooks(vit.module) == 0
        assert all(b.attn.fused_attn == vit.module.vit.blocks[0].attn.fused_attn for b in vit.module.vit.blocks)


def test_gradcam_on_tokens_matches_pytorch_grad_cam_with_a_reshape_transform(vit):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    images = [np.random.default_rng(i).integers(0, 256, (48, 48), dtype=np.uint8) for i in range(4)]
    compared = 0
    for layer in vit.module.explainable_layers[-2:]:
        ours = explain(vit, images, "gradcam", layer=layer, target=2)
        with GradCAM(model=vit.module, target_layers=[vit.module.get_layer(layer)],
                     reshape_transform=vit.module.feature_map) as cam:
            theirs = cam(input_tensor=vit.preprocess(images), targets=[ClassifierOutputTarget(2)] * 4)
        for e, t in zip(ours, theirs):
            if e.heatmap.max() == 0:  # no positive evidence: both maps empty
                assert t.max() == 0, layer
                continue
            compared += 1
            assert np.corrcoef(e.heatmap.ravel(), t.ravel())[0, 1] >= 0.99, layer
    assert compared >= 4


def test_explain_layers_puts_every_block_side_by_side(vit):
    layers = explain_layers(vit, IMAGE, "gradcam", target=1)
    assert [e.layer for e in layers] == list(vit.module.explainable_layers)
    for e in layers:  # the one-pass path equals the single-layer one
        assert np.allclose(e.heatmap, explain(vit, IMAGE, "gradcam", layer=e.layer, target=1).heatmap, atol=1e-4)
    acts = explain_layers(vit, IMAGE, "activations", top_k=4)
    assert all(a.extra["maps"].shape == (4, 6, 6) and a.extra["num_channels"] == 192 for a in acts)
    with pytest.raises(ExplainError, match="rollout explains every block's attention, not a layer"):
        explain_layers(vit, IMAGE, "rollout")


def test_captured_attention_is_the_blocks_softmax(vit):
    module = vit.module
    x = vit.preprocess([IMAGE, IMAGE.T])
    block = module.vit.blocks[1]
    seen = {}
    hook = block.norm1.register_forward_hook(lambda m, i, o: seen.__setitem__("tokens", o))
    try:
        with captured_attention(module) as found, torch.no_grad():
            module(x)
    finally:
        hook.remove()
    attn = block.attn
    n, t, d = seen["tokens"].shape
    q, k, _ = attn.qkv(seen["tokens"]).reshape(n, t, 3, attn.num_heads, d // attn.num_heads).permute(2, 0, 3, 1, 4)
    manual = torch.softmax(q @ k.transpose(-2, -1) * attn.scale, dim=-1)
    assert len(found) == 6 and found[1].shape == (2, 3, 37, 37)
    assert torch.allclose(found[1], manual, atol=1e-5)


# a hand-built two-block transformer: [class, patch 1, patch 2], attention given per block
A1 = torch.tensor([[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
A2 = torch.tensor([[0.2, 0.2, 0.6], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])


def test_rollout_by_hand():
    # 0.5 I + 0.5 A:  [[.75 .25 0] ...] then [[.6 .1 .3] ...];  class row of the product:
    # .6 * [.75 .25 0] + .1 * [0 1 0] + .3 * [0 0 1] = [.45 .25 .3]
    one_head = attention_rollout([A1[None, None], A2[None, None]])
    assert torch.allclose(one_head, torch.tensor([[0.25, 0.30]]))
    # two heads whose mean is A: the same answer
    two_heads = [torch.stack([2 * a - torch.eye(3), torch.eye(3)])[None] for a in (A1, A2)]
    assert torch.allclose(attention_rollout(two_heads), torch.tensor([[0.25, 0.30]]), atol=1e-6)


def test_gradient_rollout_by_hand():
    # gradient 1 everywhere: R = (I + A2)(I + A1); class row [1.2 .2 .6] x [[1.5 .5 0] [0 2 0] [0 0 2]]
    ones = [torch.ones(1, 1, 3, 3)] * 2
    assert torch.allclose(gradient_rollout([A1[None, None], A2[None, None]], ones), torch.tensor([[1.0, 1.2]]))
    # negative gradients are cut: with block 2's gradient negative, only block 1 counts, R = I + A1
    grads = [torch.ones(1, 1, 3, 3), -torch.ones(1, 1, 3, 3)]
    assert torch.allclose(gradient_rollout([A1[None, None], A2[None, None]], grads), torch.tensor([[0.5, 0.0]]))


def test_rollout_of_uniform_attention_is_uniform_end_to_end():
    # queries and keys zeroed: every block attends uniformly (U), (0.5 I + 0.5 U)^2 = 0.25 I + 0.75 U,
    # so the class token's row is 0.75 / 37 on every patch: a flat map at 1
    torch.manual_seed(0)
    model = create_model("vit", depth=2)
    with torch.no_grad():
        for b in model.vit.blocks:
            b.attn.qkv.weight[: 2 * 192].zero_()
            b.attn.qkv.bias[: 2 * 192].zero_()
    e = explain(wrap(model, "vit"), IMAGE, "rollout")
    assert np.allclose(e.raw, 0.75 / 37, atol=1e-6) and np.allclose(e.heatmap, 1.0)
    heads = e.extra["class_token_heads"]
    assert heads.shape == (2, 3, 6, 6) and np.allclose(heads, 1.0)


def test_sanity_check_runs_on_every_attention_method(vit):
    for method in ("rollout", "attention_gradcam"):
        check = sanity_check(vit, IMAGE, method)
        assert check.steps[0] == "trained" and check.steps[1] == "head" and len(check.steps) == 8
    assert set(METHODS) >= set(TOKEN_METHODS)


@pytest.fixture(scope="module")
def vit_registry(tmp_path_factory):
    from ferlab.checkpoints import base_card, save_checkpoint
    from ferlab.ui import ModelRegistry
    from tests.synthetic import write_tiny_checkpoints
    folder = write_tiny_checkpoints(tmp_path_factory.mktemp("checkpoints"))
    torch.manual_seed(0)
    model = create_model("vit", stem=[8, 16, 16], embed_dim=48, depth=2, num_heads=3).eval()
    save_checkpoint(model, base_card(model, [0.5], [0.5]), folder / "tiny_vit")
    return ModelRegistry(folder)


def test_the_lab_tabs_serve_a_vit(vit_registry):
    from ferlab.ui.classify import classify_image
    from ferlab.ui.compare_tab import compare_models
    from ferlab.ui.explain_tab import explain_image, method_choices
    from ferlab.ui.layers_tab import layer_grid, shows_attention, shows_cam
    from tests.test_ui import ASTRONAUT, drawn_face
    card = vit_registry.card("tiny_vit")
    assert card["tokens"] and shows_attention(card) and not shows_cam(card)
    assert not shows_attention(vit_registry.card("tiny_cnn"))
    update, note = method_choices(vit_registry, "tiny_vit", "cam")
    assert update["value"] == "gradcam" and "rollout" in update["choices"] and "cam" not in update["choices"]
    assert "`cam` is not offered" in note and "`guided_gradcam` is not offered" in note
    grads, cams, acts, attention, caption = layer_grid(vit_registry, drawn_face(), "tiny_vit", "happy", None, 0.5, 4)
    assert len(grads) == 2 and cams == [] and len(acts) == 4
    assert len(attention) == 2 * 3 + 1 and attention[0][1] == "block 1, head 1" and "rollout" in attention[-1][1]
    assert "Attention" in caption and "patch grid" in caption
    for method in ("gradcam", "rollout", "attention_gradcam"):
        face, heat, over, probs, notes, _ = explain_image(vit_registry, drawn_face(), "tiny_vit", method, None,
                                                          "predicted class")
        assert over.shape == (240, 240, 3) and f"**{method}** for" in notes
    annotated, probs, sentence, *_ = classify_image(vit_registry, ASTRONAUT, "tiny_vit", True, 0.5)
    assert annotated.shape == ASTRONAUT.shape and abs(sum(probs.values()) - 1) < 1e-3
    assert sentence.startswith("The model reads **")
    items, text = compare_models(vit_registry, drawn_face(), ["tiny_cnn", "tiny_vit"])
    assert len(items) == 2 and "| tiny_vit |" in text
