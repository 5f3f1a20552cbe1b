# The two commands of the README.  Each sets up what is missing first.
.PHONY: demo test

demo:
	@scripts/setup.sh
	bin/python scripts/demo.py

test:
	@scripts/setup.sh
	bin/test --path $(CURDIR)/tests $(ARGS)
