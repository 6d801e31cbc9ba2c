"""ferlab's Gradio lab: python app.py [--host 127.0.0.1] [--port 7860] [--share]

The same as the ``ferlab-app`` console script; Hugging Face Spaces runs this file."""
from ferlab.cli.app import main

if __name__ == "__main__":
    main()
