"""tools/analysis/rope_toy_resolution.py over seeds: every variant's row, spreads computed
from the per-seed numbers, one model per trained variant and seed, resumable results."""
import json
import re

import pytest
import torch
from _tool_loader import load_tool  # noqa: E402  (tests/)

toy = load_tool('tools/analysis/rope_toy_resolution.py', 'rope_toy_resolution')
TINY = dict(steps=2, train_size=16, num_train=32, num_test=8, batch=8)


def test_spread_and_aggregate_by_hand():
    st = toy.spread([70.0, 80.0, 90.0])
    assert st == dict(mean=80.0, std=10.0, min=70.0, max=90.0, n=3)  # sample std (n - 1)
    assert toy.spread([55.0])['std'] == 0.0
    with pytest.raises(ValueError, match='no per-seed values'):
        toy.spread([])
    agg = toy.aggregate({'2d': {0: {16: 50.0, 32: 90.0}, 1: {16: 60.0, 32: 100.0}}})
    assert agg['2d'][16]['mean'] == 55.0 and agg['2d'][32]['min'] == 90.0
    table = toy.spread_table(agg, [16, 32], 32)
    assert '| 2d | 55.0 (50.0-60.0) | 95.0 (90.0-100.0) |' in table
    assert '32 (train)' in table


def test_multi_seed_study_structure_and_cache(tmp_path, monkeypatch):
    out = toy.run(seeds=(0, 1), cache_dir=str(tmp_path), **TINY)
    variants = set(toy.VARIANTS)
    assert set(out['per_seed']) == set(out['stats']) == variants
    sizes = out['sizes']
    assert sizes == [8, 12, 16, 24, 32]
    for v in variants:
        assert sorted(out['per_seed'][v]) == [0, 1]
        for s in sizes:  # the spread is made of exactly the per-seed numbers
            vals = [out['per_seed'][v][seed][s] for seed in (0, 1)]
            st = out['stats'][v][s]
            assert st['n'] == 2 and st['min'] == min(vals) and st['max'] == max(vals)
            assert st['mean'] == pytest.approx(sum(vals) / 2)
            assert st['std'] == pytest.approx(abs(vals[0] - vals[1]) / 2 ** 0.5)
    # test-time variants are the seed's 2d model: identical at the training (anchor) size
    for v in ('as2d', 'ntk', 'yarn'):
        for seed in (0, 1):
            assert out['per_seed'][v][seed][16] == out['per_seed']['2d'][seed][16]
    # one model per trained variant and seed, each with its own result file
    runs = sorted(p.name for p in (tmp_path / 'runs').iterdir())
    assert runs == sorted(f'{t}_seed{s}.json' for t in toy.TRAINED for s in (0, 1))
    assert set(out['train_seconds']) == set(toy.TRAINED)

    # a rerun with the same settings trains nothing; other settings retrain
    def no_training(*args, **kwargs):
        raise AssertionError('retrained although the results are kept')
    monkeypatch.setattr(toy, 'train', no_training)
    again = toy.run(seeds=(0, 1), cache_dir=str(tmp_path), **TINY)
    assert again['per_seed'] == out['per_seed']
    with pytest.raises(AssertionError, match='retrained'):
        toy.run(seeds=(0, 1), cache_dir=str(tmp_path), **{**TINY, 'steps': 3})
    monkeypatch.undo()

    table = toy.write_outputs(out, str(tmp_path))
    md = (tmp_path / 'rope_toy_resolution.md').read_text()
    assert table in md and 'min-max over seeds' in md and 'seeds [0, 1]' in md
    rows = {line.split('|')[1].strip(): line for line in md.splitlines()
            if line.startswith('| ') and not line.startswith('| RoPE')}
    assert set(rows) == variants
    cell = re.findall(r'(\d+\.\d) \((\d+\.\d)-(\d+\.\d)\)', rows['2d'])
    assert len(cell) == len(sizes)
    st = out['stats']['2d'][16]
    assert cell[2] == (f"{st['mean']:.1f}", f"{st['min']:.1f}", f"{st['max']:.1f}")
    saved = json.loads((tmp_path / 'rope_toy_resolution.json').read_text())
    assert saved['per_seed']['mixed']['1']['16'] == out['per_seed']['mixed'][1][16]
    assert saved['stats']['none']['32']['n'] == 2
    png = (tmp_path / 'rope_toy_resolution.png').read_bytes()
    assert png[:8] == b'\x89PNG\r\n\x1a\n'


def test_trained_variants_use_their_reference_settings():
    """mixed: rope-vit's theta 10 and learnable frequencies; dinov3: base 100 and the
    coordinate rescaling, in train mode only."""
    mixed = toy.ToyClassifier('mixed', 16)
    assert mixed.backbone.rope.theta == 10.0
    assert any(n.endswith('rope.freqs') for n, _ in mixed.named_parameters())
    dino = toy.ToyClassifier('dinov3', 16)
    assert dino.backbone.rope.theta == 100.0
    assert dino.backbone.rope.rope_cfg['rescale_coords'] == 2.0
    x = torch.randn(2, 3, 16, 16)
    dino.eval()
    with torch.no_grad():
        assert torch.equal(dino(x), dino(x))  # eval: no augmentation
        dino.train()
        torch.manual_seed(0)
        a = dino(x)
        torch.manual_seed(1)
        assert not torch.allclose(a, dino(x))  # train: coordinates rescaled per draw
    with pytest.raises(ValueError, match='unknown variant'):
        toy.run(variants=('alibi', ), seeds=(0, ), **TINY)
    with pytest.raises(ValueError, match='distinct'):
        toy.run(seeds=(0, 0), **TINY)


def test_committed_study_is_consistent():
    """docs/toy_resolution holds the full study (>= 3 seeds, every variant); its spreads are
    the per-seed numbers' and docs/ablations.md quotes its table."""
    from pathlib import Path
    docs = Path(__file__).resolve().parents[1] / 'docs'
    saved = json.loads((docs / 'toy_resolution' / 'rope_toy_resolution.json').read_text())
    assert len(saved['seeds']) >= 3 and set(saved['per_seed']) == set(toy.VARIANTS)
    for v, seeds in saved['per_seed'].items():
        assert sorted(seeds) == sorted(str(s) for s in saved['seeds'])
        for s in saved['sizes']:
            st = saved['stats'][v][str(s)]
            assert st == pytest.approx(toy.spread([row[str(s)] for row in seeds.values()]))
    table = (docs / 'toy_resolution' / 'rope_toy_resolution.md').read_text().split('\n\n')[1]
    assert table.strip() in (docs / 'ablations.md').read_text()
