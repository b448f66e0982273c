"""What the quantization studies share (quantcorr's three tasks and geometry); see
docs/studies/quantization-correction.md and docs/studies/geometry.md.

- quant: activation fake quantization and absmax calibration;
- correction: quantization points, learned correctors and the taps a model calls at each point;
- lambda_schedule: the lambda sweep's corrector training (hybrid loss, then corrector QAT);
- loops: the full-batch step loop and the resumable epoch loop that every training phase runs;
- stages: trial seeds, checkpoints and the stage cache through which trials share a backbone;
- char_transformer: the pre-LN char transformer, its data and its trained backbone (one stage);
- rows: the recovery metrics, the phase clock and the result row of a quantcorr trial.
- vectorised: several transformer trials as one batched computation (stacked weights, batched
  layers and loops); its correctors plug into correction's taps and lambda_schedule's QAT.

Modules import torch; import them from the code that runs a trial, not from a workload's
declarations (which the orchestrator loads without torch).
"""
