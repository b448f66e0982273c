import torch

# the CI machine has 2 cores shared by many test processes: no intra-op thread pools
torch.set_num_threads(1)
