"""Cluster tests start real Ray clusters (several `ray start` processes on loopback) and drive the
`overnight` CLI against them as a user would. Deselect them with `-m "not cluster"`."""
from __future__ import annotations


def pytest_configure(config):
    config.addinivalue_line("markers", "cluster: starts real multi-node Ray clusters on loopback (deselect with -m 'not cluster')")
