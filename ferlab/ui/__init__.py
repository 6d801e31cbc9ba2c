"""The Gradio lab.  ``build_app()`` returns the ``gr.Blocks``; ``app.py`` launches it."""
from __future__ import annotations

import gradio as gr

from . import browser_tab, classify, compare_tab, explain_tab, layers_tab, models_tab
from .common import ModelRegistry

INTRO = """# ferlab — what does the emotion model look at?
Classify faces with CNNs trained on FER2013 and see the evidence behind each prediction.
**Read the heatmaps as evidence inside this model, not as where an emotion "is" in a face**:
every method makes assumptions, so the Explain tab reports how faithful a map is and whether it
survives randomizing the model's weights."""


# Passed to launch() (Gradio 6 takes css there): wide tables scroll instead of wrapping headers mid-word.
CSS = """
#models-overview table, #compare-table table { display: block; overflow-x: auto; }
#models-overview th, #models-overview td, #compare-table th { white-space: nowrap; word-break: keep-all; }
"""


def build_app(registry: ModelRegistry | None = None) -> gr.Blocks:
    registry = registry or ModelRegistry()
    models = registry.names()
    # delete_cache: Gradio's own copies of uploads and outputs older than an hour go every 30 minutes
    with gr.Blocks(title="ferlab", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(INTRO)
        if not models:
            gr.Markdown(f"⚠️ {registry.missing_message()}")
        for name, why in registry.broken().items():
            gr.Markdown(f"⚠️ Checkpoint `{name}` is left out: {why}")
        classify.build(registry, models)
        explain_tab.build(registry, models)
        layers_tab.build(registry, models)
        compare_tab.build(registry, models)
        browser_tab.build(registry, models)
        models_tab.build(registry, models)
    return demo


__all__ = ["CSS", "ModelRegistry", "build_app"]
