"""What auto-resume loads, and whether the run it resumes is the same run.

:func:`find_resumable_checkpoint` picks the file: the one ``last_checkpoint`` names,
unless it is missing or damaged, or an intact checkpoint in the work dir is further on
by the epoch / iter stored in its meta. The config stored in a checkpoint is read back
as data only (:func:`stored_config`: a JSON copy, or the text parsed without executing
it) and compared key by key (:func:`config_diff`, counting a key set to its class's
default as unchanged). Used by :class:`~vllama_mm.engine.checkpoint_hook.AtomicCheckpointHook`.
"""
import ast
import glob
import inspect
import json
import math
import os.path as osp
from typing import Any, Callable, Dict, List, Optional, Tuple

from .checkpoint import CheckpointError, safe_load, verify_checkpoint

#: meta key of the data-only (JSON) copy of the run's config, read back on resume.
CFG_JSON_KEY = 'vllama_mm_cfg_json'


def checkpoint_progress(path: str) -> Optional[Tuple[int, int]]:
    """``(iter, epoch)`` stored in an mmengine training checkpoint's meta, else ``None``.

    Reads the pickle only (tensors stay memory-mapped, never read); ``None`` for a file
    that is not a training checkpoint (no ``meta`` with ``epoch`` / ``iter``, e.g. a
    converted or foreign ``.pth``) or cannot be unpickled safely.
    """
    try:
        ckpt = safe_load(path)
    except Exception:  # noqa: BLE001 - refused or unreadable: not ours to resume
        return None
    meta = ckpt.get('meta') if isinstance(ckpt, dict) else None
    if not isinstance(meta, dict) or 'state_dict' not in ckpt:
        return None
    it, ep = meta.get('iter'), meta.get('epoch')
    if not isinstance(it, int) or not isinstance(ep, int):
        return None
    return it, ep


def _progress_text(prog: Tuple[int, int]) -> str:
    return f'epoch {prog[1]}, iter {prog[0]}'


def _inside(path: str, folder: str) -> bool:
    return osp.dirname(osp.abspath(path)) == osp.abspath(folder)


def find_resumable_checkpoint(work_dir: str,
                              ckpt_dir: Optional[str] = None) -> Tuple[Optional[str], str]:
    """The checkpoint auto-resume should load, and a note saying which and why.

    The candidates are the file ``work_dir/last_checkpoint`` names and every ``*.pth``
    in ``ckpt_dir`` (default ``work_dir``; ``best_*`` files hold no optimizer state and
    are skipped). Damaged files (truncated, CRC error) and files that are not mmengine
    training checkpoints (no ``meta`` epoch / iter) are left out, with a note; of the
    rest the one with the highest (iter, epoch) **stored in its meta** wins (file times
    change with ``cp``; the record may name an older file, even outside the work dir),
    the recorded one on a tie. Returns ``(path, note)``; the note contains ``instead``
    whenever the choice is not simply the recorded file. ``(None, '')``: nothing to
    resume (a fresh work dir). Raises :class:`CheckpointError` when checkpoints exist
    but none is intact.
    """
    ckpt_dir = ckpt_dir or work_dir
    record = osp.join(work_dir, 'last_checkpoint')
    recorded = None
    problem = ''
    if not osp.exists(record):
        problem = f'{record} does not exist'
    else:
        with open(record, 'rb') as f:
            raw = f.read()
        try:
            recorded = raw.decode('utf-8').strip()
        except UnicodeDecodeError:
            recorded = None
        if not recorded:
            problem = f'{record} is {"empty" if not raw.strip() else "not a file name"}'
            recorded = None
        elif not osp.isfile(recorded):
            problem = f'{record} names {recorded[:200]!r}, which does not exist'
            recorded = None
    candidates = sorted(p for p in glob.glob(osp.join(ckpt_dir, '*.pth'))
                        if osp.isfile(p) and not osp.basename(p).startswith('best_'))
    if recorded is not None and not any(osp.abspath(p) == osp.abspath(recorded)
                                        for p in candidates):
        candidates.append(recorded)
    skipped: List[str] = []
    ranked: List[Tuple[Tuple[int, int], int, str]] = []
    unreadable: List[str] = []
    for path in candidates:  # the pickle only: cheap, tensors are not read
        prog = checkpoint_progress(path)
        if prog is None:
            unreadable.append(path)
        else:
            ranked.append((prog, int(path == recorded), path))

    def damaged(path: str) -> bool:
        """Verify ``path``; a damaged file is skipped, with the reason."""
        nonlocal problem
        try:
            verify_checkpoint(path)
            return False
        except CheckpointError as e:
            skipped.append(str(e))
            problem = str(e) if path == recorded else problem
            return True

    # not a training checkpoint: damaged (named) or foreign (ignored)
    foreign = [path for path in unreadable if not damaged(path)]
    # newest first; verified until one is intact
    chosen = next((e for e in sorted(ranked, reverse=True) if not damaged(e[2])), None)
    if recorded is not None and recorded in foreign:
        problem = f'{record} names {recorded}, which is not a training checkpoint'
    ignored = (f'; ignored {", ".join(foreign)}: not mmengine training checkpoints (no '
               'meta epoch / iter)') if foreign else ''
    if chosen is None:
        if recorded is None and not skipped:
            return None, (f'nothing to resume in {ckpt_dir}{ignored}; training from the '
                          'start' if foreign else '')
        raise CheckpointError(f'cannot resume from {ckpt_dir}: {problem or "no usable file"}'
                              f', and no other intact checkpoint is there '
                              f'({"; ".join(skipped) or "none found"}){ignored}. Pass one '
                              'with --resume PATH, or start without --resume.')
    prog, _, path = chosen
    where = f' (skipped: {"; ".join(skipped)})' if skipped else ''
    if recorded is not None and path == recorded:
        if ignored or skipped:
            return path, (f'resuming from {path} ({_progress_text(prog)}), named by {record} '
                          f'and the newest intact checkpoint{where}{ignored}; ignoring the '
                          'others instead')
        return path, (f'resuming from {path} ({_progress_text(prog)}): named by {record}, '
                      f'the newest intact checkpoint in {ckpt_dir}')
    if recorded is not None and not problem:
        rec = next(p for p, _, q in ranked if q == recorded)
        outside = '' if _inside(recorded, ckpt_dir) else f', outside {ckpt_dir}'
        problem = (f'{record} names {recorded} ({_progress_text(rec)}{outside}), older than '
                   f'{path} ({_progress_text(prog)})')
    return path, (f'{problem}; resuming from the newest intact checkpoint {path} instead '
                  f'({_progress_text(prog)}, by the epoch / iter in its meta){where}{ignored}')


class _NotData(ValueError):
    pass


def _literal(node: ast.AST) -> Any:
    """Value of a data-only expression: literals, ``dict(k=v)``, lists, tuples, sets."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        if any(k is None for k in node.keys):
            raise _NotData(f'line {node.lineno}: ** in a dict')
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
            node.func.id == 'dict' and not node.args and all(k.arg for k in node.keywords):
        return {k.arg: _literal(k.value) for k in node.keywords}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.Name) and node.id in ('inf', 'nan'):
        return float(node.id)
    raise _NotData(f'line {getattr(node, "lineno", "?")}: {type(node).__name__} is not a '
                   'literal value')


def parse_config_text(text: str) -> Dict[str, Any]:
    """The ``name = value`` assignments of a config text, evaluated as data only.

    Nothing is executed: only literal values and ``dict(...)`` calls are accepted (what
    mmengine's ``Config.pretty_text`` writes); anything else (a function call, an import,
    an expression statement) raises ``ValueError`` naming the line.
    """
    tree = ast.parse(text, mode='exec')
    out: Dict[str, Any] = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)):
            raise _NotData(f'line {stmt.lineno}: a {type(stmt).__name__} statement, not a '
                           '`name = value` assignment')
        out[stmt.targets[0].id] = _literal(stmt.value)
    return out


def stored_config(checkpoint: dict) -> Tuple[Optional[Dict[str, Any]], str]:
    """``(config dict, '')`` of the run that wrote ``checkpoint``, or ``(None, why not)``.

    Prefers the JSON copy this hook stores in ``meta`` (:data:`CFG_JSON_KEY`); else
    parses mmengine's ``meta['cfg']`` text with :func:`parse_config_text`. Never executes
    anything from the file.
    """
    meta = checkpoint.get('meta') or {}
    if not isinstance(meta, dict):
        return None, 'no meta'
    data = meta.get(CFG_JSON_KEY)
    if isinstance(data, str):
        try:
            cfg = json.loads(data)
            if isinstance(cfg, dict):
                return cfg, ''
        except ValueError as e:
            return None, f'its JSON config copy is not valid JSON ({e})'
    text = meta.get('cfg')
    if not isinstance(text, str):
        return None, 'it stores no config'
    try:
        return parse_config_text(text), ''
    except (SyntaxError, ValueError, RecursionError) as e:
        return None, (f'its config text is not plain data ({type(e).__name__}: {e}); it is '
                      'not executed')


def _lookup(registry: Any, name: str) -> Any:
    """``registry.get(name)``, ``None`` when it cannot be resolved in this scope."""
    try:
        return registry.get(name)
    except Exception:  # noqa: BLE001 - unresolvable in this scope
        return None


_DEFAULTS_CACHE: Dict[Tuple[str, str], Dict[str, Any]] = {}


def class_defaults(type_name: Any) -> Dict[str, Any]:
    """Constructor defaults of the class a config ``type`` names in the current scope's
    registries (MODELS first); ``{}`` when it cannot be resolved."""
    if not isinstance(type_name, str):
        return {}
    from mmengine import registry
    scope = registry.DefaultScope.get_current_instance()
    key = (scope.scope_name if scope is not None else '', type_name)
    if key in _DEFAULTS_CACHE:
        return _DEFAULTS_CACHE[key]
    names = [type_name] if '.' in type_name or not key[0] else \
        [f'{key[0]}.{type_name}', type_name]  # the root registries search by scope prefix
    cls = next((c for reg in (registry.MODELS, registry.DATASETS, registry.TRANSFORMS)
                for c in (_lookup(reg, n) for n in names) if c is not None), None)
    try:
        params = inspect.signature(cls).parameters.values() if cls is not None else ()
    except (TypeError, ValueError):
        params = ()
    found = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    _DEFAULTS_CACHE[key] = found
    return found


_UNSET = '<unset>'


def config_diff(old: Any, new: Any, key: str,
                defaults: Optional[Callable[[Any], Dict[str, Any]]] = None) -> List[str]:
    """``'key.path: old -> new'`` for every leaf that differs (tuples compare as lists).

    ``defaults(type_name)``: constructor defaults of a dict's ``type``; a key set on one
    side only counts as equal when the other side's default is that value (an explicit
    ``rope_type='as2d'`` equals leaving the default).
    """
    old, new = (list(x) if isinstance(x, tuple) else x for x in (old, new))
    if isinstance(old, dict) and isinstance(new, dict):
        fill = defaults(old.get('type')) if defaults is not None and \
            old.get('type') == new.get('type') else {}
        return [d for k in list(old) + [k for k in new if k not in old] if k != '_scope_'
                for d in config_diff(old.get(k, fill.get(k, _UNSET)),
                                     new.get(k, fill.get(k, _UNSET)), f'{key}.{k}', defaults)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for i, (a, b) in enumerate(zip(old, new))
                for d in config_diff(a, b, f'{key}.{i}', defaults)]
    return [] if _same(old, new) else [f'{key}: {old!r} -> {new!r}']


def _same(a: Any, b: Any) -> bool:
    """``a == b``, with NaN equal to NaN."""
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a)
                      and math.isnan(b))


def _as_data(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The config as JSON data (what a checkpoint stores and resume reads back)."""
    return json.loads(json.dumps(cfg, default=repr))
