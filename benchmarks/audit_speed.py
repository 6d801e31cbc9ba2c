"""Scoring the full test set (PublicTest + PrivateTest, 7,178 images) with one checkpoint, and the
Dataset browser's first scan (the audit ensemble over PublicTest and PrivateTest, as the tab runs it).

    python -m benchmarks.audit_speed [--checkpoint ferlab_photo] [--out results/audit_speed.md]

Cold: no probability cache and no decoded-array cache (the dataset itself is already on disk:
its download is excluded); from cache: the same call again.  All in this process, one after
the other, each cold measurement with its cache in a fresh temporary folder.
"""
import argparse
import os
import tempfile
import time

from benchmarks import device_label, report
from ferlab.zoo import DEFAULT_MODEL


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=DEFAULT_MODEL)
    parser.add_argument("--source")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["FERLAB_CACHE"] = tmp
        from ferlab import load_model
        from ferlab.audit import audit
        from ferlab.data import load_fer2013
        model = load_model(args.checkpoint)
        load_fer2013("test_full", args.source)  # make sure the dataset is prepared: not part of the timing
        t = time.perf_counter()
        cold = audit([model], "test_full", args.source, progress=False, use_shipped=False)
        cold_s = time.perf_counter() - t
        t = time.perf_counter()
        warm = audit([model], "test_full", args.source, progress=False, use_shipped=False)
        warm_s = time.perf_counter() - t
        assert (cold.probabilities[model.name] == warm.probabilities[model.name]).all()
    from ferlab.ui.browser_tab import AuditStore
    from ferlab.ui.common import ModelRegistry
    from ferlab.zoo import audit_ensemble
    registry = ModelRegistry()
    ensemble = audit_ensemble(registry.names(labels="fer2013"))
    for name in ensemble:
        registry.get(name)  # loaded before the clock starts, as a running app has them
    scans = {}
    for shipped in (True, False):  # with the probabilities shipped beside the checkpoints, then computing them
        with tempfile.TemporaryDirectory() as tmp:
            os.environ["FERLAB_CACHE"] = tmp
            store = AuditStore(registry, args.source, use_shipped=shipped)
            t = time.perf_counter()
            store.get("test")
            scan_s = time.perf_counter() - t
            t = time.perf_counter()
            store.get("test")
            scans[shipped] = (scan_s, time.perf_counter() - t)
    text = (f"`{model.name}` on {len(cold.labels)} full-test images, "
            f"{device_label()}\n\n"
            "| audit | seconds |\n|---|---|\n"
            f"| cold (decode images + score + write cache) | {cold_s:.2f} |\n| from cache | {warm_s:.2f} |\n"
            f"| Dataset browser, first scan: {' + '.join(ensemble)} on PublicTest and PrivateTest, cold, "
            f"with the probabilities shipped beside the checkpoints | {scans[True][0]:.2f} |\n"
            f"| the same first scan computing every probability (other data, or no shipped file) | "
            f"{scans[False][0]:.2f} |\n| Dataset browser, a filter change after a scan | {scans[True][1]:.2f} |\n")
    report(text, args.out)


if __name__ == "__main__":
    main()
