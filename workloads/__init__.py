"""Workloads run by overnight: one folder per family of studies, each behind workloads.base.Workload."""
