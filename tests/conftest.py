"""Suite-wide settings: one torch thread per test process.

The CI machine has 2 cores; tests that each start 2 intra-op threads while other work runs
oversubscribe them and become tens of times slower. Tests that need another count set it
themselves.
"""

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a hard dependency
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
