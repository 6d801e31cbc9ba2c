# Every target sets itself up: a virtual environment with ferlab installed (editable) at the
# versions CI tests (requirements.txt), plus the test and benchmark extras.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= resnet_se
SPACE ?= build/space

$(VENV)/.installed: requirements.txt pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

.PHONY: setup test check app train bench space
setup: $(VENV)/.installed

# The fast tier: unit and integration tests on generated data (goal: under 5 minutes on 2 cores),
# on two pytest-xdist workers of one torch thread each (tests/conftest.py).
test: $(VENV)/.installed
	$(PY) -m pytest -n 2 --dist worksteal

# The slow tier: real-data reproductions, benchmark-sized runs and the browser test.
check: $(VENV)/.installed
	$(PY) -m pytest -m "realdata or browser or slow"

app: $(VENV)/.installed
	$(VENV)/bin/ferlab-app

# CONFIG names a recipe in train/configs/: a .yaml file or a folder of stages (ferlab_best).
train: $(VENV)/.installed
	$(VENV)/bin/ferlab-train --config $(if $(wildcard train/configs/$(CONFIG)/.),train/configs/$(CONFIG),train/configs/$(CONFIG).yaml) --resume

# A ready Hugging Face Space folder (README with the Spaces YAML, app, runtime requirements, checkpoints).
space: $(VENV)/.installed
	$(VENV)/bin/ferlab-space export $(SPACE)

# Every results/*.md, regenerated on this machine (needs the checkpoints and the data).
bench: $(VENV)/.installed
	$(PY) -m benchmarks.models --out results/models.md
	$(PY) -m benchmarks.explain_speed --out results/explain_speed.md
	$(PY) -m benchmarks.region_findings
	$(PY) -m benchmarks.app_speed --out results/app_speed.md
	$(PY) -m benchmarks.browser_stream --out results/browser_stream.md
	$(PY) -m benchmarks.audit_speed --out results/audit_speed.md
	$(PY) -m benchmarks.mislabel --out results/mislabel.md
	$(PY) -m benchmarks.storage --out results/storage.md
	$(PY) -m benchmarks.load --out results/load.md
	$(PY) -m benchmarks.face_framing
	$(PY) -m benchmarks.photo_pipeline --split test --out results/photo_pipeline.md
	$(PY) -m benchmarks.ddp_speed --steps 40 --warmup 5 --out results/ddp_speed.md
