"""Where do the models look, per emotion?  The literature's Grad-CAM claims as numbers.

    python -m benchmarks.region_findings [--checkpoint cnn ...] [--split test]

For each checkpoint: Grad-CAM at its default layer, target = the true class, for every image of
the split; each map normalized to unit mass and averaged per true class; the share of that mass
in each face region (ferlab.explain.regions).  Writes results/regions/<model>.md (table + claim
check) and results/regions/<model>.png (class-mean heatmaps with the regions drawn).
"""
import argparse
import time
from pathlib import Path


from ferlab import list_models, load_model
from ferlab.explain import region_attribution

OUT = Path(__file__).resolve().parent.parent / "results" / "regions"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", action="append")
    parser.add_argument("--split", default="test", choices=["valid", "test", "test_full"])
    parser.add_argument("--source")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in args.checkpoint or list_models():
        model = load_model(name)
        t = time.perf_counter()
        result = region_attribution(model, args.split, args.source)
        text = (f"### {model.name}: Grad-CAM mass per face region ({args.split}, layer `{result.layer}`, "
                f"target = true class, {int(result.counts.sum())} images, {time.perf_counter() - t:.0f} s)\n\n"
                + result.markdown())
        (OUT / f"{model.name}.md").write_text(text)
        result.figure(OUT / f"{model.name}.png")
        print(text)


if __name__ == "__main__":
    main()
