# Two entry points for a newcomer: `make demo` and `make test` (see README).
# `make notebooks` reruns notebooks/*.ipynb in place with their outputs (notebooks/README.md).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench figures notebooks docs clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev,all]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m varprobe.cli reproduce --quick --jobs 2 --out runs/reproduce

# docs/figures and the gallery's figure captions (docs/gallery.md), computed from the same runs (quick profile).
figures: $(STAMP)
	$(PY) -m varprobe.cli reproduce --quick --jobs 2 --out runs/reproduce
	$(PY) -m varprobe.claims.publish runs/reproduce

test: $(STAMP)
	$(PY) -m pytest

# dist/: the sdist and the wheel (python -m build with the virtualenv's pinned setuptools, nothing
# downloaded), both checked by twine; the wheel holds the package alone (tests/test_packaging.py).
.PHONY: wheel
wheel: $(STAMP)
	rm -rf dist
	$(PY) -m build --no-isolation --outdir dist .
	$(PY) -m twine check --strict dist/*

bench: $(STAMP)
	$(PY) benchmarks/layers.py

notebooks: $(STAMP)
	$(PY) notebooks/run.py

# The documentation site into site/ (ignored), strictly: a broken link or reference fails it.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) .pytest_cache
