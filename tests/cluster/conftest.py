"""Cluster tests start real Ray clusters (several `ray start` processes on loopback) and drive the
`overnight` CLI against them as a user would. They are marked `cluster` (see pyproject.toml) and
run in the default test run; deselect them with `-m "not cluster"`."""
