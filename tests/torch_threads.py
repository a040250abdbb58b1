"""A module-scoped autouse fixture for the neural-model tests: run tiny models on one thread.

Tiny models run fastest on one thread, above all on a busy machine; the previous thread
count is restored after the module. Import it into a test module to use it.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
