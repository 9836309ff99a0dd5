"""Plumbing shared by every layer: typed configs, process groups, atomic writes and file hashes, and the one
streaming reconstruction accumulator. Imports nothing else from visae."""
