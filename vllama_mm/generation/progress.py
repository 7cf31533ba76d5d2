"""Sampling utilities: progress bars (tqdm when installed, else mmengine's ProgressBar)
and seeded noise that does not depend on the device."""
from typing import Iterable, Iterator, Optional, TypeVar

import torch

T = TypeVar('T')


def progress(items: Iterable[T], total: Optional[int] = None, desc: str = '',
             enable: bool = True) -> Iterator[T]:
    """Iterate ``items`` with a progress bar (``enable=False``: plain iteration)."""
    if not enable:
        yield from items
        return
    total = len(items) if total is None and hasattr(items, '__len__') else total
    try:
        from tqdm import tqdm
    except ImportError:
        from mmengine.utils import ProgressBar
        bar = ProgressBar(total or 0)
        for x in items:
            yield x
            bar.update()
        print()
        return
    yield from tqdm(items, total=total, desc=desc, leave=False)


def randn_like(x: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Standard normal noise shaped like ``x``, drawn on the generator's device (a CPU
    generator gives the same numbers whatever device ``x`` is on)."""
    if generator is None:
        return torch.randn_like(x)
    return torch.randn(x.shape, generator=generator, device=generator.device,
                       dtype=x.dtype).to(x.device)
