"""What the multi-process tests share: a free TCP port for the rendezvous and the marker
that keeps them to the CPU (gloo) path on Linux (on a CUDA machine the launchers pick NCCL)."""
import socket
import sys

import pytest
import torch

gloo_only = pytest.mark.skipif(torch.cuda.is_available() or not sys.platform.startswith('linux'),
                               reason='the CPU (gloo) path on Linux')


def free_port() -> int:
    """A port nothing listens on now (the OS picks it; closed again before the launch)."""
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]
