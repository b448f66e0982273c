"""Workloads run by overnight: one folder per family of studies, each behind orchestrator.interface.Workload (the interface the orchestrator owns)."""
