"""Suite-wide settings: one intra-op thread. The tests use tiny shapes, where thread
start-up costs more than it saves, and parallel helpers on a 2-core machine oversubscribe."""
import torch

torch.set_num_threads(1)


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_default_scope():
    """A test that builds a Runner or a registry object leaves mmengine's process-wide
    ``DefaultScope`` behind; later tests that build without naming a scope would then look
    in that scope. Each test gets the scopes that existed before it."""
    from mmengine.registry import DefaultScope
    before = list(DefaultScope._instance_dict)
    yield
    for name in list(DefaultScope._instance_dict):
        if name not in before:
            DefaultScope._instance_dict.pop(name)
