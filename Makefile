# Two entry points, each creating .venv on a fresh machine: `make test` (the suite CI runs) and `make demo` (the main
# job: the synthetic world, CLIP pre-training, three fine-tunes and their evaluations, results.json and report.md in
# $(DEMO_WORKDIR); see actionclip_jax/demo.py).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_WORKDIR ?= workdirs/demo
DEMO_MULTILABEL_WORKDIR ?= workdirs/demo_multilabel

# The package alone, which is all the demo needs. torch stays out: the demo reads no PyTorch file, and with torch
# installed tensorboardX imports it in every process that writes metrics, seconds each.
$(BIN)/.installed-package: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	touch $@

# The test suite's extras on top: torch (the PyTorch twins, .pt files), libtpu (--mode=compile for TPU topologies),
# pytest and the ONNX export's runtime, then jax2onnx without its pins (setup.cfg's [export] says why).
$(BIN)/.installed: $(BIN)/.installed-package
	$(BIN)/pip install -q -e '.[torch,tpu,test]'
	$(BIN)/pip install -q --no-deps 'jax2onnx>=0.17.1'
	touch $@

.PHONY: install test demo demo-multilabel
install: $(BIN)/.installed

test: $(BIN)/.installed
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

demo: $(BIN)/.installed-package
	$(BIN)/python -m actionclip_jax.demo --workdir=$(DEMO_WORKDIR)

# The multi-label task on its own (two objects a video, mAP): its world, pre-training and two seeds' fine-tunes.
demo-multilabel: $(BIN)/.installed-package
	$(BIN)/python -m actionclip_jax.demo --multilabel --workdir=$(DEMO_MULTILABEL_WORKDIR)
