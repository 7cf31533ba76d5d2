"""Suite-wide settings: one intra-op thread. The tests use tiny shapes, where thread
start-up costs more than it saves, and parallel helpers on a 2-core machine oversubscribe."""
import torch

torch.set_num_threads(1)
