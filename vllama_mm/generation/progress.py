"""Progress bars: tqdm when installed, else mmengine's ProgressBar (always available)."""
from typing import Iterable, Iterator, Optional, TypeVar

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
