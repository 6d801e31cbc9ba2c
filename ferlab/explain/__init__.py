"""The explanation engine: Grad-CAM, CAM, layer activations and pixel attributions for every
ferlab model, plus checks of whether a heatmap can be trusted.

    from ferlab import load_model
    from ferlab.explain import explain, explain_layers, faithfulness, sanity_check
    model = load_model("ferlab_best")
    e = explain(model, image, "gradcam", target="happy")
    e.heatmap, e.overlay(alpha=0.5)
"""
from . import methods  # noqa: F401  (registers the methods: CNN ones first, as the menus list them)
from . import attention  # noqa: F401,I001
from .core import METHODS, ExplainError, Explanation, applicable_methods, explain, model_lock, overlay_heatmap
from .faithfulness import Faithfulness, SanityCheck, faithfulness, sanity_check
from .layers import explain_layers
from .regions import REGIONS, region_attribution, region_masks, region_shares, region_words

__all__ = ["METHODS", "REGIONS", "ExplainError", "Explanation", "applicable_methods", "Faithfulness", "SanityCheck", "explain",
           "explain_layers", "faithfulness", "model_lock", "overlay_heatmap", "region_attribution", "region_masks",
           "region_shares", "region_words", "sanity_check"]
