# Table 11e: global average pooling instead of the class token, VisionLLaMA-L. As the authors'
# GAP path, norm(mean(x)): no class token, no final norm on the tokens, the LayerNorm `ln2`
# after the mean.
_base_ = ['../vision-llama-l-p16_8xb256-lamb-800e_in1k-128px.py']

model = dict(
    backbone=dict(with_cls_token=False, out_type='avg_featmap', final_norm=False))
