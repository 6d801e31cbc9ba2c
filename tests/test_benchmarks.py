"""The benchmark scripts' shared reporting: measured tables reach the README unchanged."""
import re
from pathlib import Path

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
