"""Builds synthetic environments from real files: gcc-built ELF objects, dist-info, venv layouts."""
