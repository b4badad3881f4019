"""Taipan's host toolchain: builds, verifies and runs the hypervisor image."""
