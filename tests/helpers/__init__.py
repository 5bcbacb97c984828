"""Importable test helpers: value builders, RPC shortcuts, extra servers and clusters.

Fixtures stay in ``tests/conftest.py`` (and the plugins it registers); test modules
import helpers from here, never from conftest.
"""
