"""VisionLLaMA models: plain torch + mmengine, no task-library imports."""
from .attention import RoPEAttention, window_partition, window_unpartition
from .blocks import DropPath, LayerScale, PatchEmbed, SwiGLU, VisionLLaMABlock, swiglu_hidden
from .rope import RoPE2D, apply_rope, grid_positions, rope_frequencies, rope_table
from .mae import VisionLLaMAMAE
from .pyramid_vision_llama import PyramidVisionLLaMA
from .simple_fpn import LN2d, SimpleFPN
from .vision_llama import VisionLLaMA

__all__ = [
    'RoPE2D', 'apply_rope', 'grid_positions', 'rope_frequencies', 'rope_table',
    'RoPEAttention', 'window_partition', 'window_unpartition', 'SwiGLU', 'LayerScale',
    'DropPath', 'PatchEmbed', 'VisionLLaMABlock', 'swiglu_hidden', 'VisionLLaMA', 'VisionLLaMAMAE',
    'PyramidVisionLLaMA', 'SimpleFPN', 'LN2d'
]
