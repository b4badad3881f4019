"""Test guests the toolchain builds: small kernels generated from Python, booted by the tests."""
