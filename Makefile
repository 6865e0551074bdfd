# minitok: every target sets itself up. `make test` and `make demo` work on a fresh clone
# with nothing but Python 3.10+ installed.
#
# torch is pinned here (not in pyproject, which admits a range for users) so that setup takes
# the CPU wheel and never pulls a multi-GB CUDA build.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH  := torch==2.13.0

.PHONY: setup test lint unit demo bench lab progress assign clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install "$(TORCH)" -e ".[dev,instructor]"
	$(PY) -m ipykernel install --sys-prefix --name python3 > /dev/null
	touch $(STAMP)

# The README's test command: lint, unit tests, generated lessons up to date, then every
# notebook executed (solutions strictly, lessons as a learner would open them). -rs prints
# why a test was skipped (no bubblewrap for the grader's sandbox, no nbgrader). nbgrader
# calls alembic: the venv's bin/ goes on PATH.
test: setup
	$(PY) -m minitok env
	$(PY) -m ruff check minitok tests scripts solutions
	$(PY) -m minitok assign --check
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q -rs tests
	MINITOK_STRICT=1 $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
		--nbval-cell-timeout=600 --nbval-sanitize-with tests/nbval_sanitize.cfg solutions

lint: setup
	$(PY) -m ruff check minitok tests scripts solutions

unit: setup
	$(PY) -m pytest -q -rs tests -m "not slow"

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
	$(VENV)/bin/jupyter lab workspace/

# How far a learner has got: the grader's checks on workspace/.
progress: setup
	$(PY) -m minitok progress

# Rebuild lessons/ from solutions/ (an instructor's step after editing a solution).
assign: setup
	$(PY) -m minitok assign

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache out
