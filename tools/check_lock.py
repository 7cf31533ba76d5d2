"""Compare the installed Python packages with requirements/lock.txt.

    python tools/check_lock.py [--lock requirements/lock.txt] [--allow-extra]

Prints one line per difference (a locked package missing or at another version, an
installed package the lock does not list) and exits 1 if there is any; ``--allow-extra``
tolerates unlisted packages (what tools/setup_env.sh uses, so a user's own additions to the
venv do not fail the setup). vllama_mm itself (installed editable) is not in the lock.
"""
import argparse
import os.path as osp
import platform
import re
import sys
from importlib import metadata
from typing import Dict, List, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
LOCK = osp.join(REPO, 'requirements', 'lock.txt')
NOT_LOCKED = {'vllama-mm'}  # the project itself, installed editable


def canonical(name: str) -> str:
    """PEP 503 name: case and runs of ``-_.`` do not matter."""
    return re.sub(r'[-_.]+', '-', name).lower()


def read_lock(path: str = LOCK) -> Dict[str, str]:
    """``{canonical name: version}`` from a ``name==version`` per line file."""
    pins: Dict[str, str] = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.split('#', 1)[0].strip()
            if not line:
                continue
            m = re.fullmatch(r'([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)', line)
            if m is None:
                raise ValueError(f'{path}:{n}: expected name==version, got {line!r}')
            pins[canonical(m.group(1))] = m.group(2)
    return pins


def installed() -> Dict[str, str]:
    """``{canonical name: version}`` of the distributions this interpreter sees."""
    return {canonical(d.metadata['Name']): d.version for d in metadata.distributions()
            if d.metadata['Name']}


def lock_platform(path: str = LOCK) -> str:
    """The 'Resolved for ...' line of the lock header ('' if absent)."""
    with open(path) as f:
        for line in f:
            if line.startswith('# Resolved for '):
                return line[len('# Resolved for '):].strip().rstrip('.')
    return ''


def compare(pins: Dict[str, str], have: Dict[str, str]) -> Tuple[List[str], List[str]]:
    """(differences from the lock, installed packages the lock does not list)."""
    diffs = []
    for name, want in sorted(pins.items()):
        got = have.get(name)
        if got is None:
            diffs.append(f'{name}: locked {want}, not installed')
        elif got.split('+')[0] != want.split('+')[0]:  # torch reports 2.11.0+cu130
            diffs.append(f'{name}: locked {want}, installed {got}')
    extra = [f'{name}: installed {have[name]}, not in the lock'
             for name in sorted(set(have) - set(pins) - NOT_LOCKED)]
    return diffs, extra


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--lock', default=LOCK)
    parser.add_argument('--allow-extra', action='store_true',
                        help='report unlisted packages but do not fail on them')
    args = parser.parse_args()
    pins = read_lock(args.lock)
    diffs, extra = compare(pins, installed())
    here = (f'{platform.python_implementation()} {platform.python_version()}, '
            f'{platform.system()} {platform.machine()}')
    for line in diffs + extra:
        print(f'[check_lock] {line}')
    failed = bool(diffs) or (bool(extra) and not args.allow_extra)
    if failed:
        print(f'[check_lock] {sys.executable} ({here}) differs from {args.lock} '
              f'(resolved for {lock_platform(args.lock)}): run tools/setup_env.sh '
              f'with VLLAMA_VENV pointing at this venv', file=sys.stderr)
        return 1
    print(f'[check_lock] {len(pins)} locked packages installed at their versions'
          + (f'; {len(extra)} unlisted' if extra else ''))
    return 0


if __name__ == '__main__':
    sys.exit(main())
