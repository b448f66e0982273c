"""One CPU thread per test process: the machine is shared and the nets are small."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)
    yield
