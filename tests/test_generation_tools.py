"""tools/generation: sample.py (PNG grid), sample_ddp.py (ADM .npz, resumable,
deterministic), fid.py (Frechet distance, local TorchScript Inception), extract_latents.py
(cache, resume, CachedLatents)."""
import os
import os.path as osp
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = Path(__file__).resolve().parents[1]
TINY_DIT = str(ROOT / 'configs/generation/dit_llama/dit-llama-tiny-p4_1xb32-500i_synthetic-32px.py')
TINY_SIT = str(ROOT / 'configs/generation/sit_llama/sit-llama-tiny-p4_1xb32-300i_synthetic-32px.py')


def tool(name: str):
    return load_tool(f'tools/generation/{name}.py', name)


def make_ckpt(config: str, path: Path) -> None:
    from vllama_mm.generation.apis import build_generator
    torch.manual_seed(0)
    model, _ = build_generator(config)
    for p in model.parameters():  # non-trivial outputs
        torch.nn.init.normal_(p, std=0.05)
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, path)


@pytest.mark.parametrize('config', [TINY_DIT, TINY_SIT])
def test_sample_grid(tmp_path, config):
    ckpt = tmp_path / 'w.pth'
    make_ckpt(config, ckpt)
    out = tmp_path / 'grid.png'
    assert tool('sample').main([config, str(ckpt), '--classes', '0', '3', '--n-per-class',
                                '3', '--steps', '3', '--out', str(out), '--device', 'cpu']) == 0
    img = Image.open(out)
    assert img.size == (3 * 34 + 2, 2 * 34 + 2)
    assert tool('sample').main([config, str(ckpt), '--classes', '9', '--out', str(out),
                                '--device', 'cpu']) == 1  # class out of range


def test_sample_ddp_npz_resumable_and_deterministic(tmp_path):
    ckpt = tmp_path / 'w.pth'
    make_ckpt(TINY_SIT, ckpt)
    args = [TINY_SIT, str(ckpt), '--num-samples', '5', '--batch-size', '2', '--steps', '3',
            '--out-dir', str(tmp_path / 's')]
    mod = tool('sample_ddp')
    assert mod.main(args) == 0
    arr = np.load(tmp_path / 's' / 'samples_5.npz')['arr_0']
    assert arr.shape == (5, 32, 32, 3) and arr.dtype == np.uint8
    # resume: a lost shard is regenerated identically, the others are reused
    shard = mod.shard_path(str(tmp_path / 's'), 1)
    before = np.load(shard)['images']
    os.remove(shard)
    mtime = osp.getmtime(mod.shard_path(str(tmp_path / 's'), 0))
    assert mod.main(args) == 0
    assert np.array_equal(np.load(shard)['images'], before)
    assert osp.getmtime(mod.shard_path(str(tmp_path / 's'), 0)) == mtime
    assert np.array_equal(np.load(tmp_path / 's' / 'samples_5.npz')['arr_0'], arr)


def test_frechet_distance_closed_form():
    from vllama_mm.generation.apis import frechet_distance
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 9.0])
    mu1, mu2 = np.zeros(3), np.array([1.0, 0.0, 2.0])
    # diagonal covariances: |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    want = 5.0 + (1 - 2) ** 2 + (2 - 1) ** 2 + 0.0
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(want, abs=1e-9)
    rng = np.random.default_rng(0)
    m = rng.normal(size=(5, 5))
    s = m @ m.T
    assert frechet_distance(mu1[:1].repeat(5), s, mu1[:1].repeat(5), s) == \
        pytest.approx(0.0, abs=1e-8)


class _Feat(torch.nn.Module):
    """Stand-in with the interface of the FID Inception TorchScript."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 8, 4, 4)

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        return self.conv(x.float() / 255).mean((2, 3))


def test_fid_tool(tmp_path):
    net = torch.jit.script(_Feat())
    net.save(str(tmp_path / 'inc.pt'))
    rng = np.random.default_rng(0)
    a = rng.integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    b = np.clip(a.astype(int) + 60, 0, 255).astype(np.uint8)
    np.savez(tmp_path / 'a.npz', arr_0=a)
    np.savez(tmp_path / 'b.npz', arr_0=b)
    fid = tool('fid')
    assert fid.main([str(tmp_path / 'a.npz'), str(tmp_path / 'a.npz'), '--inception',
                     str(tmp_path / 'inc.pt'), '--device', 'cpu', '--batch-size', '16']) == 0
    assert fid.main([str(tmp_path / 'a.npz'), str(tmp_path / 'b.npz'), '--inception',
                     str(tmp_path / 'missing.pt'), '--device', 'cpu']) == 1


def test_extract_latents_and_cached_dataset(tmp_path):
    from vllama_mm.generation.datasets import CachedLatents
    from vllama_mm.datasets.synthetic_imagenet import make_image
    rng = np.random.default_rng(0)
    for k in range(2):
        os.makedirs(tmp_path / 'img' / f'c{k}')
        for i in range(3):
            make_image(k, 2, 40, rng).save(tmp_path / 'img' / f'c{k}' / f'{i}.png')
    out = tmp_path / 'lat'
    ext = tool('extract_latents')
    args = [TINY_DIT, '--data-root', str(tmp_path / 'img'), '--out-dir', str(out),
            '--image-size', '32', '--batch-size', '4', '--num-workers', '0', '--device', 'cpu']
    assert ext.main(args) == 0
    m = np.load(out / 'moments.npy')
    assert m.shape == (6, 2, 6, 32, 32) and (out / 'complete').exists()
    assert np.array_equal(m[:, 1, :3], m[:, 0, :3, :, ::-1])  # the flipped view
    ds = CachedLatents(str(out))
    item = ds[4]
    assert item['labels'] == 1 and item['moments'].shape == (6, 32, 32)
    # resume from a recorded position: earlier rows are kept as they are
    (out / 'progress.txt').write_text('4')
    m[4:] = 0
    np.save(out / 'moments.npy', m)
    assert ext.main(args) == 0
    again = np.load(out / 'moments.npy')
    assert np.abs(again[4:]).max() > 0
    os.remove(out / 'complete')
    with pytest.raises(FileNotFoundError, match='unfinished'):
        CachedLatents(str(out))


def test_load_generator_weights_choice_and_family_check(tmp_path):
    from vllama_mm.generation.apis import build_generator, load_generator
    model, _ = build_generator(TINY_DIT)
    sd = model.state_dict()
    raw = {f'module.{k}': v + 1 for k, v in sd.items()}
    raw['steps'] = torch.tensor(3)
    path = tmp_path / 'c.pth'
    torch.save({'state_dict': sd, 'ema_state_dict': raw, 'meta': {}}, path)
    k = 'denoiser.x_embedder.proj.bias'
    ema, _ = load_generator(TINY_DIT, str(path))
    assert torch.equal(ema.state_dict()[k], sd[k])
    trained, _ = load_generator(TINY_DIT, str(path), weights='raw')
    assert torch.equal(trained.state_dict()[k], sd[k] + 1)
    torch.save({'state_dict': sd, 'meta': {'vllama_mm': {'format': 'sit-llama'}}}, path)
    with pytest.raises(ValueError, match='SiTGenerator config'):
        load_generator(TINY_DIT, str(path))
    torch.save({'state_dict': sd}, path)
    with pytest.raises(ValueError, match='does not fit'):  # another depth
        load_generator(TINY_DIT, str(path), cfg_options={'model.denoiser.arch.num_layers': 2})
