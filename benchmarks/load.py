"""Concurrent users against the real app on localhost, driven by gradio_client.

    python -m benchmarks.load [--clients 8] [--requests 50] [--checkpoints DIR] [--out results/load.md]

Starts ``app.py`` on a free loopback port, computes every request's result once serially, then
runs ``clients`` threads with ``requests`` mixed calls each (classify, explain, compare and, when
the dataset is reachable, a dataset-browser filter), and reports errors, p50/p95 latency,
requests per second, the server's RSS after a warm-up and after each of ``--rounds`` rounds of
the measured load (each read after ``--settle`` idle seconds), and whether every
concurrent result equals the serial result for the same input (no cross-talk between users).
Everything stays on 127.0.0.1 and stops by itself.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
from benchmarks import report as write_report
from ferlab.ui.browser_tab import ENSEMBLE


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_app(checkpoints: str | None = None, log_path: str | None = None, timeout: float = 120,
              extra_env: dict | None = None, cwd: str | Path = ROOT):
    """Start ``cwd``'s app.py (the repository's by default) on 127.0.0.1; returns (process, url)."""
    port = free_port()
    env = dict(os.environ, GRADIO_ANALYTICS_ENABLED="False", PYTHONUNBUFFERED="1", **(extra_env or {}))
    if checkpoints:
        env["FERLAB_CHECKPOINTS"] = str(checkpoints)
    log = open(log_path or os.devnull, "w")
    proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port)], cwd=cwd,
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with code {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc, url
        except Exception:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("app did not start in time")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def make_images(folder: Path, count: int = 4) -> list[str]:
    import cv2
    from tests.synthetic import face
    paths = []
    for i in range(count):
        img = cv2.resize(face(i % 7, np.random.default_rng(i)), (160, 160), interpolation=cv2.INTER_CUBIC)
        path = folder / f"face{i}.png"
        cv2.imwrite(str(path), img)
        paths.append(str(path))
    return paths


def requests_for(images: list[str], models: list[str], with_browser: bool) -> list[tuple[str, tuple]]:
    """Every distinct request the scenario sends: (api_name, args).  ``models[0]`` gets the classify and
    explain calls, as the model the app opens with; compare pits it against ``models[1]``."""
    from gradio_client import handle_file
    out = []
    for img in images:
        out.append(("/classify", (handle_file(img), models[0], True, 0.45, True)))  # generated faces: fallback on
        out.append(("/explain", (handle_file(img), models[0], "gradcam", None, "predicted class", 0.5, "jet")))
        if len(models) >= 2:
            out.append(("/compare", (handle_file(img), models[:2], 0.5)))
    if with_browser:
        for view in ("misclassified", "suspected mislabeled", "correct"):
            out.append(("/browse", ("test", ENSEMBLE, "all", "all", view, 0.0, 1.0, "suspect score", 1)))
    return out


def comparable(api: str, result) -> str:
    """The part of a result that must not depend on other users: labels, numbers and text,
    not the temporary file names images are served under."""
    if api == "/classify":
        return json.dumps([result[1], result[2]], sort_keys=True)
    if api == "/explain":
        return json.dumps([result[3], result[4]], sort_keys=True)  # probabilities and the notes with the AUCs
    if api == "/compare":
        return json.dumps([[c for _, c in ((g.get("image"), g.get("caption")) for g in result[0])], result[1]],
                          sort_keys=True)
    if api == "/browse":
        return json.dumps([result[1], result[3]], sort_keys=True)
    return json.dumps(result, sort_keys=True, default=str)


def run_load(url: str, pid: int, clients: int, per_client: int, images: list[str], models: list[str],
             with_browser: bool, seed: int = 0, download_files: bool = True, rounds: int = 1,
             settle_s: float = 0.0) -> dict:
    """``download_files=False`` leaves output images on the server (results are compared on their
    labels and text either way); the benchmark downloads them, as a browser would."""
    from gradio_client import Client
    reqs = requests_for(images, models, with_browser)
    serial_client = Client(url, verbose=False, download_files=download_files)
    serial = {i: comparable(api, serial_client.predict(*args, api_name=api)) for i, (api, args) in enumerate(reqs)}
    latencies, errors, mismatches = [], [], []
    lock = threading.Lock()

    def user(k: int, count: int):
        client = Client(url, verbose=False, download_files=download_files)
        rng = random.Random(seed * 1000 + k)
        for _ in range(count):
            i = rng.randrange(len(reqs))
            api, args = reqs[i]
            t = time.perf_counter()
            try:
                got = comparable(api, client.predict(*args, api_name=api))
            except Exception as exc:  # counted, never fatal
                with lock:
                    errors.append(f"{api}: {type(exc).__name__}: {exc}")
                continue
            with lock:
                latencies.append(time.perf_counter() - t)
                if got != serial[i]:
                    mismatches.append(api)

    def round_of(count: int) -> float:
        start = time.perf_counter()
        threads = [threading.Thread(target=user, args=(k, count)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - start

    warmup = max(2, per_client // 5)
    round_of(warmup)  # warm-up with the same concurrency: sessions, threads, allocator pools
    latencies.clear()  # errors and mismatches of the warm-up still count
    # RSS is read once the server has been idle for ``settle_s`` (the app trims its malloc heaps
    # every 15 s): retained memory, not the transient peak of the last requests
    time.sleep(settle_s)
    rss_before = rss_mb(pid)
    # the measured load in equal rounds, RSS after each: a leak grows every round, allocator
    # high-water marks level off
    wall, rss_rounds = 0.0, []
    for r in range(rounds):
        wall += round_of(per_client // rounds + (r < per_client % rounds))
        time.sleep(settle_s)
        rss_rounds.append(rss_mb(pid))
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    total = clients * (per_client + warmup)
    return {"clients": clients, "requests": clients * per_client, "all_requests": total, "errors": len(errors), "error_samples": errors[:5],
            "mismatches": len(mismatches), "p50_ms": float(np.percentile(lat, 50)),
            "p95_ms": float(np.percentile(lat, 95)), "rps": len(latencies) / wall, "wall_s": wall,
            "rss_before_mb": rss_before, "rss_after_mb": rss_rounds[-1], "rss_rounds_mb": rss_rounds, "kinds": sorted({a for a, _ in reqs})}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=50, help="requests per client")
    parser.add_argument("--rounds", type=int, default=5, help="measure RSS after each of this many rounds")
    parser.add_argument("--settle", type=float, default=20.0, help="idle seconds before each RSS reading")
    parser.add_argument("--checkpoints", help="checkpoint folder (default: checkpoints/)")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    from ferlab.checkpoints import list_models
    from ferlab.data import LOCAL_COPY
    from ferlab.ui.common import ModelRegistry
    models = list_models(args.checkpoints)  # None: checkpoints/ or FERLAB_CHECKPOINTS
    if not models:
        sys.exit("no checkpoints to serve")
    default = ModelRegistry(args.checkpoints).default()  # what a user lands on: it takes classify and explain
    if default:
        models = [default] + [m for m in models if m != default]
    with tempfile.TemporaryDirectory() as tmp:
        images = make_images(Path(tmp))
        proc, url = start_app(args.checkpoints, log_path=str(Path(tmp) / "app.log"))
        try:
            report = run_load(url, proc.pid, args.clients, args.requests, images, models, LOCAL_COPY.is_dir(),
                              rounds=args.rounds, settle_s=args.settle)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    growth = report["rss_after_mb"] - report["rss_before_mb"]
    text = (f"{report['clients']} concurrent clients x {args.requests} mixed requests ({', '.join(report['kinds'])}) "
            f"against app.py on 127.0.0.1, models: {', '.join(models)}\n\n"
            "| requests (+ warm-up) | errors | results differing from serial | p50 latency | p95 latency | requests/s | "
            "server RSS after warm-up | RSS after load | growth |\n|---|---|---|---|---|---|---|---|---|\n"
            f"| {report['requests']} (+{report['all_requests'] - report['requests']}) | {report['errors']} | {report['mismatches']} | {report['p50_ms']:.0f} ms | "
            f"{report['p95_ms']:.0f} ms | {report['rps']:.2f} | {report['rss_before_mb']:.0f} MB | "
            f"{report['rss_after_mb']:.0f} MB | {growth:+.0f} MB |\n")
    text += (f"\nServer RSS read after {args.settle:.0f} s idle, after the warm-up and after each of the {args.rounds} measured rounds: "
             + f"{report['rss_before_mb']:.0f}, "
             + ", ".join(f"{r:.0f}" for r in report["rss_rounds_mb"]) + " MB\n")
    if report["error_samples"]:
        text += "\nerrors: " + "; ".join(report["error_samples"]) + "\n"
    write_report(text, args.out)


if __name__ == "__main__":
    main()
