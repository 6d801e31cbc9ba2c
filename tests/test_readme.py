"""The README as a newcomer reads it: short, its Python example runs, its links resolve."""
import re
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ASSETS = ROOT / "ferlab" / "assets"


def test_readme_is_short():
    assert len(README.splitlines()) <= 350


def test_python_api_example_runs_on_the_shipped_models():
    """The API block, on the shipped example photo; the audit lines need FER2013 and stop before."""
    block = re.search(r"## Python API\n\n```python\n(.*?)```", README, flags=re.S).group(1)
    code = block.split("result = audit(")[0]
    code = (code.replace('"group.jpg"', repr(str(ASSETS / "astronaut.jpg")))
                .replace('["a.jpg", "b.png"]', repr([str(ASSETS / "astronaut.jpg"), str(ASSETS / "chelsea.jpg")])))
    namespace = {"crops": [np.full((48, 48), 128, np.uint8)] * 2, "crop": np.full((48, 48), 90, np.uint8)}
    exec(compile(code, "README.md", "exec"), namespace)
    assert len(namespace["faces"]) == 1 and namespace["faces"][0].heatmap.shape == (48, 48)
    assert namespace["probs"].shape == (2, 7)
    assert namespace["e"].target_name == "fear"


def test_relative_links_resolve():
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), target
