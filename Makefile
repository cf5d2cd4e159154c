.PHONY: run demo test test-slow lint bench

run demo:
	scripts/demo

test:
	scripts/test

test-slow:
	scripts/test -m slow

lint:
	scripts/lint

bench:
	scripts/setup --redis && .venv/bin/python -m bench $(ARGS)
