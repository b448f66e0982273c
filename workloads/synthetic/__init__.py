"""A synthetic workload for testing and benchmarking the orchestrator itself.

It does a fixed amount of real CPU work (dense matrix products), reports a loss curve that depends
on its config, checkpoints after every step and resumes from the last one. On request it fails
(``fail: raise``), produces a NaN loss (``fail: nan``), or kills its own process (``fail: crash``),
so the orchestrator's handling of each case can be tested. With ``marker_dir`` it leaves one file
per execution start and per finished execution, which tests count. With ``placement: true`` it
also returns where its last execution ran as Ray sees it (node id, GPU ids, CUDA_VISIBLE_DEVICES,
pid) and writes the same into its start marker, for multi-node and GPU-packing tests. With
``barrier_dir`` and ``barrier_n`` each trial waits (up to ``barrier_timeout_s``) until ``barrier_n``
trials have reached that point, so a test can require that many to run at the same time.
"""
from .params import SyntheticMetrics, SyntheticParams
from .workload import Synthetic, burn, placement, wait_for_peers

__all__ = ["Synthetic", "SyntheticMetrics", "SyntheticParams", "burn", "placement", "wait_for_peers"]
