# pocketlm — the commands a user types. Everything installs itself into .venv on first use.
PY ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
DATA ?= ../shared/data
MODEL ?= sql-autocomplete
VARIANT ?=
LIMIT ?=
EVAL_ARGS ?=
PORT ?= 8000
export PYTHONPATH := $(CURDIR)/pysrc:$(CURDIR)

.PHONY: demo test export eval golden setup clean-venv site serve measure-page bench-constraint bench bench-ab soak

$(VENV)/.installed: requirements.txt
	$(PY) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

# Browser runtime assets from npm, pinned by web/package-lock.json (Pyodide also runs pocketlm's tests).
web/node_modules/.installed: web/package.json web/package-lock.json
	cd web && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

setup: $(VENV)/.installed web/node_modules/.installed

test: setup
	$(PYTHON) -m pytest -q

# Train + export one model into web/models/$(MODEL)/ (resumes from runs/$(MODEL)/ if interrupted).
# MODEL=path/to/model.bin imports a llama2.c checkpoint instead (export/llama2c.py) into web/models/<NAME>/:
# TOKENIZER= defaults to tokenizer.bin beside the model file, NAME= to the file name without .bin.
export: setup
ifneq ($(filter %.bin,$(MODEL)),)
	$(PYTHON) -m export llama2c $(MODEL)$(if $(TOKENIZER), --tokenizer $(TOKENIZER))$(if $(NAME), --name $(NAME))
else
	$(PYTHON) -m export $(MODEL) --data $(DATA)
endif

# Evaluate on the held-out validation databases of the export's split (runs/ is written by export).
eval: setup
	@test -f runs/$(MODEL)/val.jsonl || $(PYTHON) -m export $(MODEL) --data $(DATA) --split-only
	$(PYTHON) -m pocketlm eval sql --model web/models/$(MODEL) --data runs/$(MODEL)/val.jsonl \
		--train $(DATA)/sql/train.jsonl $(if $(VARIANT),--variant $(VARIANT)) $(if $(LIMIT),--limit $(LIMIT)) $(EVAL_ARGS)

demo: setup
	@test -f web/models/sql-autocomplete/manifest.json || $(PYTHON) -m export sql-autocomplete --data $(DATA)
	@test -f web/models/reminder-extract/manifest.json || $(PYTHON) -m export reminder-extract --data $(DATA)
	@echo "SQL completion of 'SELECT name FROM' for a small schema, run natively:"
	@$(PYTHON) -m pocketlm complete --model web/models/sql-autocomplete --schema docs/example-schema.txt "SELECT name FROM"
	@echo "Reminder extraction, run natively:"
	@$(PYTHON) -m pocketlm extract --model web/models/reminder-extract "remind me at 7pm to walk the dog"
	@$(PYTHON) -m webtools.build_site
	@echo
	@echo "Open the page by double-click (no server needed):  file://$(CURDIR)/site/index.html"
	@echo "or serve it with threads enabled:                  make serve  ->  http://127.0.0.1:$(PORT)/"

# Build the static site (HTML from web/templates/, runtimes from web/node_modules, models) into site/.
site: setup
	$(PYTHON) -m webtools.build_site

# Measure the built page headless (both ways of opening it) against native onnxruntime; a benchmark, not a test.
measure-page: site
	$(PYTHON) -m webtools.measure_page --json runs/measure-page.json

# Per-token cost of schema-constrained JSON decoding on the reminder model's tokenizer.
bench-constraint: setup
	$(PYTHON) -m bench.json_constraint_cost

# Side-by-side performance report: the page vs native onnxruntime vs transformers.js, per model and variant
# (bench/results.json, bench/history/, bench/REPORT.md, bench/*.png; about 15 min). BENCH_ARGS=--quick for a short run.
# transformers.js and matplotlib are installed for the bench only (bench/js, bench/requirements.txt).
BENCH_ARGS ?=
bench/js/node_modules/.installed: bench/js/package.json bench/js/package-lock.json
	cd bench/js && npm ci --ignore-scripts --no-audit --no-fund
	touch $@

$(VENV)/.bench-installed: bench/requirements.txt $(VENV)/.installed
	$(PYTHON) -m pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	touch $@

# A long headless session on the built page (issue 7): 1000 sql requests with random cancellations and 500
# extractions (>= 10 000 tokens); memory after warm-up, in the middle and at the end (limit: +10%).
soak: site
	$(PYTHON) -m bench.soak --site site --json runs/soak.json

bench: setup bench/js/node_modules/.installed $(VENV)/.bench-installed
	$(PYTHON) -m bench $(BENCH_ARGS)

# A change's effect, fairly on a machine whose speed drifts: the page of BASE (a commit) against the working
# tree's, alternating cold loads (and decode runs with AB_ARGS=--runs 3). make bench-ab BASE=HEAD~1
bench-ab: setup bench/js/node_modules/.installed $(VENV)/.bench-installed
	@test -n "$(BASE)" || { echo "error: give the commit to compare against: make bench-ab BASE=<commit>" >&2; exit 2; }
	$(PYTHON) -m bench.ab --base $(BASE) $(AB_ARGS)

# Serve site/ on 127.0.0.1 with the cross-origin isolation headers onnxruntime-web needs for threads.
serve: site
	$(PYTHON) -m webtools.serve --port $(PORT)

clean-venv:
	rm -rf $(VENV)

# After an export: record the model's greedy outputs (every variant) as the golden reference.
golden: setup
	$(PYTHON) -m export.golden web/models/$(MODEL) tests/golden/$(MODEL).json
