"""Workloads run by overnight: one folder per family of studies, each behind orchestrator.study.contract.Workload (the interface the orchestrator owns)."""
