"""Packaging for vllama_mm: VisionLLaMA backbones as an OpenMMLab plugin."""
import os.path as osp

from setuptools import find_packages, setup


def read_version() -> str:
    ns: dict = {}
    with open(osp.join(osp.dirname(__file__), 'vllama_mm', 'version.py')) as f:
        exec(f.read(), ns)
    return ns['__version__']


setup(
    name='vllama_mm',
    version=read_version(),
    description='VisionLLaMA (2D RoPE / AS2DRoPE, SwiGLU) backbones for '
    'MMPretrain, MMSegmentation and MMDetection',
    long_description=open(osp.join(osp.dirname(__file__), 'README.md')).read()
    if osp.exists(osp.join(osp.dirname(__file__), 'README.md')) else '',
    long_description_content_type='text/markdown',
    packages=find_packages(include=['vllama_mm', 'vllama_mm.*']),
    python_requires='>=3.8',
    # What the plugin itself imports. The task libraries are extras: install the one(s) you use.
    # The tested versions of everything are pinned in requirements/lock.txt
    # (`pip install -c requirements/lock.txt -e .[mmpretrain]`; tools/setup_env.sh does all).
    install_requires=['torch>=2.0', 'mmengine>=0.10.0,<0.11'],
    extras_require={
        'mmpretrain': ['mmcv>=2.0.0,<2.2.0', 'mmpretrain>=1.2.0,<1.3'],
        'mmseg': ['mmcv>=2.0.0,<2.2.0', 'mmsegmentation>=1.2.2,<1.3', 'ftfy', 'regex'],
        'mmdet': ['mmcv>=2.0.0,<2.2.0', 'mmdet>=3.3.0,<3.4', 'pycocotools'],
        'generation': ['diffusers', 'torchdiffeq'],
        'deploy': ['onnx', 'onnxruntime', 'onnxscript'],
        'tests': ['pytest', 'model-index'],
    },
    classifiers=[
        'Programming Language :: Python :: 3',
        'Framework :: PyTorch',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)
