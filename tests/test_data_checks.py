"""Data (issue 14 item 7): the synthetic-data generators never mix old and new files."""
import os

import pytest

from vllama_mm.datasets import synthetic_coco, synthetic_imagenet


@pytest.mark.parametrize('module,split_dir', [(synthetic_imagenet, 'train/class_00'),
                                              (synthetic_coco, 'train2017')])
def test_generator_replaces_its_own_data_and_refuses_foreign(module, split_dir, tmp_path):
    root = str(tmp_path / 'data')
    kw = dict(img_size=16, num_classes=2) if module is synthetic_imagenet else {}
    module.generate(root, num_train=3, num_val=1, **kw)
    folder = os.path.join(root, split_dir)
    assert len(os.listdir(folder)) == 3
    module.generate(root, num_train=2, num_val=1, **kw)  # a smaller rerun: no stale files
    assert len(os.listdir(folder)) == 2
    foreign = tmp_path / 'real'
    (foreign / split_dir).mkdir(parents=True)
    (foreign / split_dir / 'mine.jpg').write_bytes(b'real data')
    with pytest.raises(FileExistsError, match='not written by this generator'):
        module.generate(str(foreign), num_train=1, num_val=1, **kw)
    assert (foreign / split_dir / 'mine.jpg').read_bytes() == b'real data'
