# Every target sets itself up: a virtual environment with requirements.txt installed.
VENV ?= .venv
PY := $(VENV)/bin/python
CONFIG ?= cnn_keras

$(VENV)/.installed: requirements.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	touch $@

.PHONY: setup test app train
setup: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest

app: $(VENV)/.installed
	$(PY) app.py

train: $(VENV)/.installed
	$(PY) train/train.py --config train/configs/$(CONFIG).yaml --resume
