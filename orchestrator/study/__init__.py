"""What a study is: the YAML schema and its loader, the typed parameters and metrics of a
workload, the grid of trials, the declared claims, the workload contract and its determinism
declaration. Imports only orchestrator.results. See docs/architecture.md."""
