"""The benchmark scripts' shared reporting: measured tables reach the README unchanged."""
import re
from pathlib import Path

import pytest

from benchmarks import ROOT, sync_readme


def test_sync_readme_replaces_only_its_own_section(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- a:start -->\nold a\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nold b\n<!-- b:end -->\n")
    assert sync_readme("a", "| new | table |\n", readme)
    assert readme.read_text() == ("intro\n<!-- a:start -->\n| new | table |\n<!-- a:end -->\nmiddle\n"
                                  "<!-- b:start -->\nold b\n<!-- b:end -->\n")
    before = readme.read_text()
    assert not sync_readme("c", "x", readme) and readme.read_text() == before


def test_readme_tables_are_the_measured_ones():
    # every marked README section is the results file its benchmark wrote (a hand copy goes stale)
    readme = (ROOT / "README.md").read_text()
    sections = dict(re.findall(r"<!-- (\w+):start -->\n(.*?)<!-- \1:end -->", readme, flags=re.S))
    assert {"results", "storage", "load"} <= set(sections)
    for name, published in sections.items():
        measured = (ROOT / "results" / ("README.md" if name == "results" else f"{name}.md")).read_text()
        if name == "results":  # results/README.md has a title and protocol line above the table
            measured = measured.split("\n\n", 2)[2]
        assert published == measured, f"README section {name!r} differs from what its benchmark wrote"


def test_latency_only_measures_this_machine_and_writes_only_its_out(capsys, tmp_path):
    import torch
    from train.benchmark import main
    written = {p: p.stat().st_mtime_ns for p in (ROOT / "README.md", ROOT / "results" / "README.md")}
    main(["--latency-only", "cnn", "--repeats", "2", "--out", str(tmp_path / "latency.md")])
    out = capsys.readouterr().out
    # the header names the vector ISA torch dispatches to, which moves CPU times several-fold
    assert f"({torch.backends.cpu.get_cpu_capability()})" in out.splitlines()[0]
    assert re.search(r"^\| cnn \| \d+\.\d ms \| \d+\.\d ms \|$", out, flags=re.M)
    assert (tmp_path / "latency.md").read_text() == out.rstrip("\n") + "\n"
    assert {p: p.stat().st_mtime_ns for p in written} == written
    with pytest.raises(SystemExit):  # --out alone would be ignored by the full run: refused
        main(["--out", str(tmp_path / "other.md")])
