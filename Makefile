# The two commands of the README (each sets up what is missing first), and
# the project's checks.  .ci/run runs the checks in order.
.PHONY: demo test matrix dist smoke pins layering

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

# Which way the imports run: the library imports nothing above it, and no
# import cycle (scripts/layering.py; tests/test_layering.py runs it too).
layering:
	python3 scripts/layering.py

# constraints.txt anew, from the newest versions setup.py allows.
pins:
	python3 scripts/pins.py generate
	python3 scripts/pins.py check
