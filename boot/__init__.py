"""Generators of Taipan's boot stub: assembly text and boot-time tables, emitted from Python."""
