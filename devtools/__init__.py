"""Tools for developing the service that both ``tests/`` and ``benchmarks/`` use.

A package of its own so that neither of those imports the other for shared plumbing,
and so that nothing here ships: ``pyproject.toml`` packages only ``service`` and
``ingest``, and the container image copies only those. It is importable when Python
runs from the repository root (``python -m pytest``, ``python -m benchmarks.quality``).
"""
