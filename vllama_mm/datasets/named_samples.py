"""Samples that fail to load name their file.

An undecodable image deep in an epoch otherwise ends as e.g. "image file is truncated",
raised in a data-loader worker without the file. :func:`name_failing_samples` is applied
by our tools' Runner to the datasets it builds (nothing else changes).
"""
from typing import Any

class SampleError(RuntimeError):
    """Loading one sample failed; the message names its file."""


_NAMED_CLASSES: dict = {}


_PATH_KEYS = ('img_path', 'seg_map_path', 'file_name', 'filename', 'img')


def _sample_file(dataset: Any, index: int) -> str:
    try:
        info = dataset.get_data_info(index)
    except Exception:  # noqa: BLE001 - no name to give
        return ''
    if not isinstance(info, dict):
        return ''
    paths = [info[k] for k in _PATH_KEYS if isinstance(info.get(k), str) and info[k]]
    return ' / '.join(dict.fromkeys(paths))  # image and label map of segmentation


def name_failing_samples(dataset: Any) -> Any:
    """Make ``dataset[i]`` failures name the sample's file (``SampleError``).

    An undecodable image deep in an epoch otherwise ends as e.g. "image file is
    truncated", raised in a data-loader worker, without the file. The instance's class
    is swapped for a subclass whose ``__getitem__`` adds the file from
    ``get_data_info(i)`` (nothing else changes; only datasets of our tools' Runner).
    """
    cls = type(dataset)
    if not hasattr(dataset, 'get_data_info') or getattr(cls, '_vllama_names_files', False):
        return dataset
    named = _NAMED_CLASSES.get(cls)
    if named is None:
        def __getitem__(self, index):
            try:
                return cls.__getitem__(self, index)
            except Exception as e:  # noqa: BLE001 - re-raised with the file named
                path = _sample_file(self, index)
                if not path:
                    raise
                raise SampleError(f'{path}: cannot load sample {index} ({type(e).__name__}: '
                                  f'{" ".join(str(e).split())[:300]}); fix or remove the file '
                                  '(tools/analysis/check_dataset.py CONFIG scans them all)') \
                    from e
        named = type(cls.__name__, (cls, ), {'__getitem__': __getitem__,
                                            '_vllama_names_files': True,
                                            '__module__': cls.__module__,
                                            '__reduce_ex__': _reduce_as(cls)})
        _NAMED_CLASSES[cls] = named
    try:
        dataset.__class__ = named
    except TypeError:
        pass
    return dataset


def _reduce_as(cls: type):
    """Pickle (spawned workers) as the original class: the name-adding subclass only
    lives in this process."""
    def __reduce_ex__(self, protocol):
        self.__class__ = cls
        try:
            return cls.__reduce_ex__(self, protocol)
        finally:
            self.__class__ = _NAMED_CLASSES[cls]
    return __reduce_ex__
