"""Running a study: finding workloads, preparing the plan, Ray and Tune, bundles and groups,
the worker side of a trial, command workloads, progress and the stage cache. Imports
orchestrator.study and orchestrator.results. See docs/architecture.md."""
