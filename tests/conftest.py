"""Shared fixtures: an isolated $GENLAB_HOME and tiny configs so every test runs in seconds."""

from __future__ import annotations

import pytest

TINY_VAE = {"widths": [4, 8], "hidden_dim": 32, "latent_dim": 4, "res_blocks": 1}
TINY_TRAIN = {"batch_size": 32, "val_every": 10, "val_batches": 2, "log_every": 5, "sample_every": 10_000,
              "ckpt_every": 5, "warmup_steps": 5, "progress": False, "threads": 1}


@pytest.fixture(scope="session", autouse=True)
def genlab_home(tmp_path_factory):
    """Every test session gets its own cache folder; parsed datasets are shared within it."""
    home = tmp_path_factory.mktemp("genlab-home")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENLAB_HOME", str(home))
    yield home
    mp.undo()


@pytest.fixture
def tiny_vae():
    return dict(TINY_VAE)


@pytest.fixture
def tiny_train():
    return dict(TINY_TRAIN)


@pytest.fixture
def one_thread():
    """One torch thread for tiny models: a second only adds synchronisation (and the suite may share the machine).
    Modules of tiny models use it for every test: `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
