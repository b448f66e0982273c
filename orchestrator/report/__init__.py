"""Reading results back: tables, plots, claims' verdicts, the Markdown and HTML report,
comparisons and the findings index. Imports orchestrator.study, orchestrator.results and the
workload registry (for a workload's own determinism note). See docs/architecture.md."""
