"""Suite-wide settings: one torch thread for every test and fixture.

The CI machine has 2 cores; tests of small networks that start 2 intra-op threads while other
work runs oversubscribe them and become tens of times slower, and results computed at different
thread counts may differ in the last bits. The session fixture sets one thread before any module
fixture runs; the function fixture restores it after each test, because stage functions set the
thread count from their config (``threads``).
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread_for_the_session():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def _one_torch_thread_after_each_test():
    yield
    torch.set_num_threads(1)
