# minitok: every target sets itself up. `make test` and `make demo` work on a fresh clone
# with nothing but Python 3.10+ installed.
#
#   make setup              a learner's setup: torch (CPU build), minitok, JupyterLab
#   make setup-instructor   adds the test tools and nbgrader (make test, unit and lint use it)
#
# torch is pinned here (pyproject admits a range for users). On Linux it comes from PyTorch's
# CPU wheel index, since PyPI's Linux torch is the multi-GB CUDA build; when that index cannot
# be reached, scripts/install_torch.py says so in one line and uses pip's default index.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
STAMP_INSTRUCTOR := $(VENV)/.installed-instructor
TORCH  := torch==2.13.0
# a comma as a value: $(call) splits its arguments at literal commas
COMMA  := ,

.PHONY: setup setup-instructor test test-lane-1 test-lane-2 notebooks notebooks-1 notebooks-2 lint unit unit-1 unit-2 demo bench lab progress assign clean

setup: $(STAMP)

setup-instructor: $(STAMP_INSTRUCTOR)

# Each stamp is one pip run with all its extras (the instructor's includes the learner's, so
# a fresh `make test` resolves and installs once, not twice).
define install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) scripts/install_torch.py "$(TORCH)"
	$(PY) -m pip install "$(TORCH)" -e ".[$(1)]"
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
endef

$(STAMP): pyproject.toml Makefile scripts/install_torch.py
	$(call install,lab)
	touch $(STAMP)

$(STAMP_INSTRUCTOR): pyproject.toml Makefile scripts/install_torch.py
	$(call install,lab$(COMMA)dev$(COMMA)instructor)
	touch $(STAMP) $(STAMP_INSTRUCTOR)

# The README's test command: the unit tests and the solution notebooks (executed strictly),
# in two lanes at once, one per core: each lane runs its share of tests/ and then its share of
# the notebooks; lane 2 first prints the environment, lints and checks that lessons/ is
# generated from solutions/ (a few seconds that lane 1 spends grading). -rs prints why a test
# was skipped (no bubblewrap for the grader's sandbox, no nbgrader). nbgrader calls alembic:
# the venv's bin/ goes on PATH.
test: setup-instructor
	$(MAKE) --no-print-directory -j2 $(SYNC) test-lane-1 test-lane-2

# Each lane's output together, line by line (GNU make 4+; macOS's make 3.81 interleaves).
# One torch thread per lane: two lanes share the two cores, and a second thread in each only
# waits (a fresh clone's lane 2 pytest took 7:56 with one thread, 9:40 with two). The tests
# that must see two threads (a check or a loop that forgets to restore the count) set it.
SYNC := $(if $(filter 3.%,$(MAKE_VERSION)),,--output-sync=line)
LANE_ENV := OMP_NUM_THREADS=1
PYTEST := PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(LANE_ENV) $(PY) -m pytest -q -rs -p no:cacheprovider
NBVAL := MINITOK_STRICT=1 $(LANE_ENV) $(PY) -m pytest -q -p no:cacheprovider --nbval-lax \
	--nbval-current-env --nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg
# Lane 1 holds the tests that run the grader (two graders may run at once: each run holds a
# block of worker uids of its own), the benchmarks' tests, and lessons 01, 02, 03, 04, 06 and
# 09; lane 2 the other tests and notebooks, a new lesson's included. Measured in a fresh
# clone's run (2026-12-07, quiet), once each judge imported torch once: lane 1's tests took
# 4:23 and its notebooks 4:13, lane 2's 5:35 and 3:44; test_demo (about 20 s) then moved to
# lane 1.
NOTEBOOKS_1 := $(wildcard solutions/0[123469]_*.ipynb)
NOTEBOOKS_2 := $(filter-out $(NOTEBOOKS_1),$(wildcard solutions/[0-9][0-9]_*.ipynb))
TESTS_1 := tests/test_grade.py tests/test_grade_hostile.py tests/test_grade_verdicts.py \
	tests/test_nbgrader.py tests/test_workspace.py tests/test_export.py tests/test_bench.py \
	tests/test_demo.py
TESTS_2 := $(filter-out $(TESTS_1),$(wildcard tests/test_*.py))

test-lane-1: setup-instructor
	$(PYTEST) $(TESTS_1)
	$(NBVAL) $(NOTEBOOKS_1)

test-lane-2: setup-instructor
	$(PY) -m minitok env
	$(PY) -m ruff check minitok tests scripts solutions
	$(PY) -m minitok assign --check
	$(PYTEST) $(TESTS_2)
	$(NBVAL) $(NOTEBOOKS_2)

# The solution notebooks alone, in the same two lanes.
notebooks: setup-instructor
	$(MAKE) --no-print-directory -j2 notebooks-1 notebooks-2

notebooks-1 notebooks-2: notebooks-%: setup-instructor
	$(NBVAL) $(NOTEBOOKS_$*)

lint: setup-instructor
	$(PY) -m ruff check minitok tests scripts solutions

# The fast unit tests (not marked slow), in the same two lanes.
unit: setup-instructor
	$(MAKE) --no-print-directory -j2 $(SYNC) unit-1 unit-2

unit-1 unit-2: unit-%: setup-instructor
	$(PYTEST) -m "not slow" $(TESTS_$*)

# The main job: out/demo.png and a table. DEMO_ARGS="--train out/models" retrains everything.
demo: setup
	$(PY) -m minitok demo $(DEMO_ARGS)

# Every lesson's benchmark in one run, one table of ratios, also written to out/bench.md
# (each one also runs on its own: python -m minitok.bench.<name>). BENCH_ARGS=--quick for a
# smoke run.
bench: setup
	$(PY) -m minitok.bench --out out/bench.md $(BENCH_ARGS)

# The learner's command: their own copy of the lessons (made on first use, never
# overwritten, ignored by git and by `make test`), opened in Jupyter.
lab: setup
	$(PY) -m minitok workspace
	$(VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) workspace/

# How far a learner has got: the grader's checks on workspace/.
progress: setup
	$(PY) -m minitok progress

# Rebuild lessons/ from solutions/ (an instructor's step after editing a solution).
assign: setup
	$(PY) -m minitok assign

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache out
