"""The Gradio lab:  ferlab-app [--host 127.0.0.1] [--port 7860] [--share]   (or python app.py)"""
import argparse
import os

from ferlab.ui import CSS, build_app
from ferlab.ui.memory import limit_arenas, start_trimmer

MAX_FILE_SIZE = "25mb"


def main(argv=None):
    on_spaces = bool(os.environ.get("SPACE_ID"))
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="0.0.0.0" if on_spaces else "127.0.0.1",
                        help="interface to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", 7860)))
    parser.add_argument("--share", action="store_true", help="open a public gradio.live link (off by default)")
    args = parser.parse_args(argv)
    limit_arenas()  # before Gradio starts its worker threads: RSS stays flat under concurrent users
    start_trimmer()
    demo = build_app()
    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size=MAX_FILE_SIZE,
                show_error=False, css=CSS)


if __name__ == "__main__":
    main()
