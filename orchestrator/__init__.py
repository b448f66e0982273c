"""overnight: Ray Tune sweep orchestrator. Knows studies, trials, Ray and Parquet; never a specific workload."""
__version__ = "0.1.0"
