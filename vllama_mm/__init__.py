"""VisionLLaMA for OpenMMLab (MMPretrain, MMSegmentation, MMDetection)."""
from .version import __version__

__all__ = ['__version__']
