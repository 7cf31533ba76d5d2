"""Masked-autoencoder encoder on the plain VisionLLaMA (docs/design.md).

Drop-in for mmpretrain's ``MAEViT`` inside the stock ``MAE`` algorithm with its
``MAEPretrainDecoder`` neck and ``MAEPretrainHead``: ``forward(x, mask=True)`` returns
``(latent [B, 1 + N_keep, C], mask [B, N], ids_restore [B, N])``.

Each kept token keeps its original grid position: the RoPE table of the full grid is
gathered with the kept indices (a per-sample table [B, N_keep, Hc]).

The class token follows the released MAE weights: the blocks run on patch tokens only
and the class token is concatenated after the last block, before the final norm
(``ln1(cat(cls, blocks(x)))``), so it is never rotated and never attended to by the
encoder; it exists for the stock decoder, which expects a token at index 0.
"""
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from .backbone_utils import run_block
from .rope import gather_tokens
from .vision_llama import VisionLLaMA


class VisionLLaMAMAE(VisionLLaMA):
    """VisionLLaMA encoder with MAE random masking.

    Args:
        mask_ratio: fraction of patch tokens removed (0.75 keeps 25 %).
        out_type: output of the unmasked path (``extract_feat``), default ``'raw'``.
        **kwargs: :class:`VisionLLaMA` arguments (``arch='mae-b'`` is the released layout).
    """

    def __init__(self, arch: Union[str, dict] = 'mae-b', mask_ratio: float = 0.75,
                 out_type: str = 'raw', **kwargs):
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f'mask_ratio must be in [0, 1), got {mask_ratio}')
        if kwargs.get('window_size', 0):
            raise ValueError('VisionLLaMAMAE does not support window attention')
        if kwargs.get('abs_pos_embed') is not None:
            raise ValueError('VisionLLaMAMAE does not support abs_pos_embed (the released '
                             'MAE encoder has RoPE only); set abs_pos_embed=None')
        super().__init__(arch=arch, out_type=out_type, **kwargs)
        self.mask_ratio = mask_ratio
        if self.out_indices != [self.num_layers - 1]:
            raise ValueError('VisionLLaMAMAE returns the last block only (out_indices=-1), '
                             f'got {kwargs.get("out_indices")}')

    def init_extra(self) -> None:
        if self.with_cls_token:
            torch.nn.init.normal_(self.cls_token, std=0.02)  # as mmpretrain's MAEViT

    def random_masking(self, x: Tensor, mask_ratio: float
                       ) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """Per-sample shuffle by random noise (as mmpretrain's MAEViT).

        x: [B, N, C] -> kept tokens [B, N_keep, C], mask [B, N] (1 = removed),
        ids_restore [B, N], ids_keep [B, N_keep].
        """
        B, N, C = x.shape
        keep = int(N * (1 - mask_ratio))
        if keep < 1:
            raise ValueError(f'mask_ratio {mask_ratio} keeps no token of the {N} patches of '
                             'this input; lower it or use a larger input')
        noise = torch.rand(B, N, device=x.device)
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        ids_keep = ids_shuffle[:, :keep]
        x_kept = torch.gather(x, 1, ids_keep.unsqueeze(-1).expand(-1, -1, C))
        mask = torch.ones(B, N, device=x.device)
        mask[:, :keep] = 0
        mask = torch.gather(mask, 1, ids_restore)
        return x_kept, mask, ids_restore, ids_keep

    def _encode(self, tokens: Tensor, hw, table, ids_keep: Optional[Tensor] = None) -> Tensor:
        """Blocks on patch tokens [B, n, C], then class token (if any), then final norm.
        ``ids_keep`` [B, n]: the kept tokens' rows of the grid ``table``."""
        tokens = self.drop_after_pos(tokens)
        for i, layer in enumerate(self.layers):
            layer_table = self.rope.layer_table(table, i)  # mixed: per layer
            if ids_keep is not None:  # kept tokens keep their positions
                layer_table = gather_tokens(layer_table, ids_keep)
            tokens = run_block(layer, tokens, hw, layer_table, with_cp=self.with_cp)
        if self.with_cls_token:
            tokens = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)
        if self.final_norm:
            tokens = self.ln1(tokens)
        return tokens

    def forward(self, x: Tensor, mask: Optional[bool] = True):
        """``mask`` None/False: backbone outputs (a 1-tuple, formatted by ``out_type``);
        True: the MAE triplet ``(latent, mask, ids_restore)``."""
        tokens, hw = self.patch_embed(x)  # [B, N, C]
        # [N, Hc], patch tokens only (mixed: [L, heads, N, R]; dinov3: this forward's draw)
        table = self.rope.grid(hw[0], hw[1], x.device,
                               aug=self.rope.coords_augmentation(x.device))
        if mask is None or mask is False:
            return (self._format_output(self._encode(tokens, hw, table), hw), )
        tokens, mask_map, ids_restore, ids_keep = self.random_masking(tokens, self.mask_ratio)
        return self._encode(tokens, hw, table, ids_keep), mask_map, ids_restore
