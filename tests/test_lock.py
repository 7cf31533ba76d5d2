"""The environment lock: requirements/lock.txt is well formed, tools/setup_env.sh installs
every package through it, the README's version table agrees with it, and the interpreter
running the tests has exactly the locked stack installed."""
import os.path as osp
import re

import pytest
from _tool_loader import load_tool  # noqa: E402  (tests/)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOCK = osp.join(ROOT, 'requirements', 'lock.txt')
STACK = osp.join(ROOT, 'requirements', 'stack.in')

check_lock = load_tool('tools/check_lock.py', 'check_lock')


def _stack_requirements():
    """(canonical name, specifier) of each line of requirements/stack.in."""
    out = []
    with open(STACK) as f:
        for line in f:
            line = line.split('#', 1)[0].strip()
            if line:
                m = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)\s*(.*)', line)
                out.append((check_lock.canonical(m.group(1)), m.group(2)))
    return out


def test_lock_pins_every_top_level_requirement_within_its_range():
    from packaging.specifiers import SpecifierSet
    pins = check_lock.read_lock(LOCK)
    assert pins['mmcv'] == '2.1.0'
    for name, spec in _stack_requirements():
        assert name in pins, f'{name} (requirements/stack.in) is not in the lock'
        assert pins[name] in SpecifierSet(spec), f'{name}=={pins[name]} violates {spec!r}'
    # the numpy-1 stack: nothing in the lock may be a numpy-2-only release
    assert pins['numpy'].startswith('1.') and pins['pandas'].startswith('2.')


def test_read_lock_rejects_a_malformed_line(tmp_path):
    bad = tmp_path / 'lock.txt'
    bad.write_text('torch==2.11.0\nnumpy>=1.26\n')
    with pytest.raises(ValueError, match=r'lock.txt:2: expected name==version'):
        check_lock.read_lock(str(bad))


def test_compare_reports_every_kind_of_difference():
    pins = {'torch': '2.11.0', 'numpy': '1.26.4', 'pandas': '2.3.3'}
    have = {'torch': '2.11.0+cu130', 'numpy': '2.4.0', 'jupyter': '1.0', 'vllama-mm': '0.1'}
    diffs, extra = check_lock.compare(pins, have)
    assert diffs == ['numpy: locked 1.26.4, installed 2.4.0',
                     'pandas: locked 2.3.3, not installed']
    assert extra == ['jupyter: installed 1.0, not in the lock']


def test_setup_env_installs_every_package_through_the_lock():
    with open(osp.join(ROOT, 'tools', 'setup_env.sh')) as f:
        script = f.read()
    # pip is only called through INSTALL (= pip install -c $LOCK) or `pip wheel -c $LOCK`
    assert 'INSTALL=("${PIP[@]}" install -c "$LOCK")' in script
    calls = re.findall(r'"\$\{PIP\[@\]\}"\s+(\S+)([^\n]*)', script)
    assert calls, 'no pip call found'
    for sub, rest in calls:
        assert (sub == 'install' and rest.startswith(' -c "$LOCK"')) or \
            (sub == 'wheel' and '-c "$LOCK"' in rest) or sub == 'check', (sub, rest)
    # no hard-coded version pins outside the lock
    assert not re.search(r'[A-Za-z]==\$?[0-9{]', script.replace('pip==', '')), \
        'setup_env.sh pins a version itself; pins belong in requirements/lock.txt'


def test_readme_version_table_matches_the_lock():
    pins = check_lock.read_lock(LOCK)
    with open(osp.join(ROOT, 'README.md')) as f:
        readme = f.read()
    section = readme.split('## Supported versions', 1)[1].split('\n## ', 1)[0]
    rows = re.findall(r'^\| ([^|]+?) \| ([^|]+?) \|', section, flags=re.M)
    table = {check_lock.canonical(n): v for n, v in rows if n not in ('package', '---')}
    checked = 0
    for name, version in table.items():
        if name == 'python':
            continue
        assert name in pins, f'README lists {name}, which is not in the lock'
        assert version == pins[name], f'README: {name} {version}, lock: {pins[name]}'
        checked += 1
    for must in ('torch', 'torchvision', 'numpy', 'mmengine', 'mmcv', 'mmpretrain',
                 'mmsegmentation', 'mmdet', 'pandas', 'opencv-python', 'pycocotools',
                 'psutil', 'openmim'):
        assert must in table, f'README version table misses {must}'
    assert checked >= 13


def test_this_environment_matches_the_lock():
    """Fails outside the locked venv, listing every difference (rerun tools/setup_env.sh)."""
    diffs, extra = check_lock.compare(check_lock.read_lock(LOCK), check_lock.installed())
    problems = diffs + extra
    assert not problems, ('this interpreter differs from requirements/lock.txt '
                          '(run tools/setup_env.sh on its venv):\n  ' + '\n  '.join(problems))
