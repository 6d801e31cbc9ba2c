# Every target sets itself up: a virtual environment with requirements.txt installed.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= cnn_keras

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

.PHONY: setup test app train bench
setup: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest

app: $(VENV)/.installed
	$(PY) app.py

train: $(VENV)/.installed
	$(PY) train/train.py --config train/configs/$(CONFIG).yaml --resume

# Every measured figure in the README, regenerated on this machine (needs checkpoints and the data).
bench: $(VENV)/.installed
	$(PY) train/benchmark.py
	$(PY) benchmarks/explain_speed.py --out results/explain_speed.md
	$(PY) benchmarks/region_findings.py
	$(PY) benchmarks/app_speed.py --out results/app_speed.md
	$(PY) benchmarks/audit_speed.py --out results/audit_speed.md
	$(PY) benchmarks/mislabel.py --out results/mislabel.md
	$(PY) benchmarks/storage.py --out results/storage.md
	$(PY) benchmarks/load.py --out results/load.md
	$(PY) benchmarks/face_framing.py
	$(PY) benchmarks/photo_pipeline.py --split test --out results/photo_pipeline.md
