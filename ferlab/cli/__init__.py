"""Command-line entry points (installed as console scripts by pyproject.toml):

    ferlab-app       the Gradio lab                       (ferlab.cli.app)
    ferlab-train     train a recipe, or a folder of stages (ferlab.cli.train)
    ferlab-evaluate  score a checkpoint on a split         (ferlab.cli.evaluate)
    ferlab-ship      copy a run into checkpoints/ and read PrivateTest once (ferlab.cli.ship)
    ferlab-ensemble  would a run help the PublicTest-chosen ensemble?     (ferlab.cli.ensemble)
    ferlab-audit     score a split or a folder of photos   (ferlab.audit)
    ferlab-space     write a Hugging Face Space folder     (ferlab.space)
"""
