# Taipan's workflows. Thin: every target is the toolchain's CLI (see `taipan --help`).
TAIPAN := .venv/bin/taipan
ARGS ?=

.PHONY: all setup build run iso test mptest bench images clean

all: build

setup:
	@scripts/bootstrap

build: setup
	$(TAIPAN) build

run: setup
	$(TAIPAN) run $(ARGS)

iso: setup
	$(TAIPAN) iso

test: setup
	$(TAIPAN) build
	.venv/bin/pytest $(ARGS)

mptest: setup
	$(TAIPAN) mptest $(ARGS)

bench: setup
	scripts/bench $(ARGS)

# The file images configs/raw-file.toml and configs/multiboot-file.toml boot, and the
# Debian kernel and initramfs of configs/linux.toml and configs/linux-pair.toml.
images: setup
	.venv/bin/python -m guests hello build/images/hello.bin --name rawfile
	.venv/bin/python -m guests mbtest build/images/mbtest.elf --name mbfile
	$(TAIPAN) images linux

clean:
	rm -rf build
