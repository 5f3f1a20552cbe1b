# The two commands of the README (each sets up what is missing first), and
# the project's checks.  .ci/run runs the checks in order.
.PHONY: demo test matrix dist smoke pins layering docs

demo:
	@scripts/setup.sh
	bin/python scripts/demo.py

test:
	@scripts/setup.sh
	bin/test --path $(CURDIR)/tests $(ARGS)

# The test suite on each supported Python (PYTHONS="3.9 3.13" for some).
matrix:
	@scripts/setup.sh
	scripts/matrix.sh $(PYTHONS)

# The sdist and the wheel in dist/, checked.
dist:
	@scripts/setup.sh
	scripts/dist.sh

# The wheel of dist/ in a fresh virtualenv, used from outside the checkout.
smoke: dist
	scripts/smoke.sh

# The documentation in docs/_build/html, warnings as errors (a reference
# out of step with the code is one), then the examples of its pages run
# as doctests against the private cluster.  -E reads every page again, so
# that the reference follows the code.
SPHINX = bin/sphinx-build -W --keep-going -n -d docs/_build/doctrees
docs:
	@scripts/setup.sh
	$(SPHINX) -E -b html docs docs/_build/html
	$(SPHINX) -b doctest docs docs/_build/doctest

# Which way the imports run: the library imports nothing above it, and no
# import cycle (scripts/layering.py; tests/test_layering.py runs it too).
layering:
	python3 scripts/layering.py

# constraints.txt anew, from the newest versions setup.py allows.
pins:
	python3 scripts/pins.py generate
	python3 scripts/pins.py check
