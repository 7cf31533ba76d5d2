# Beyond the paper (not one of its rows): DiT-LLaMA-B/4 exactly as
# dit-llama-b-p4_8xb32-amp-400k_in1k-256px.py, with RoPE-Mixed (Heo et al. 2024, naver-ai
# rope-vit `RoPE-Mixed`) in place of the authors' 2D RoPE: learnable x/y frequencies per
# block, head and pair (denoiser.rope.freqs), initialised as rope-vit with theta 10. The
# recipe has no weight decay (AdamW, weight_decay 0), so the frequencies need no rule of
# their own. Only the RoPE changes.
_base_ = ['./dit-llama-b-p4_8xb32-amp-400k_in1k-256px.py']

model = dict(denoiser=dict(rope_type='mixed', theta=10.0))
