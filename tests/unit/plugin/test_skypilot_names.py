"""The contract with SkyPilot (`skypilot_names`): every name resolves on the
installed SkyPilot; each one, taken out of it in turn, is refused by name by
the check of its side (the install, the node hook, the dev sandbox); and every
private SkyPilot name sky-mithril's source uses, and every SkyPilot method it
overrides, is in the table."""

import ast
import enum
import importlib
import inspect
import re
import sys
import types
from pathlib import Path
from typing import Any, Dict, List, Set, Tuple

import pytest
import sky

import sky_mithril
from sky_mithril import node_hook
from sky_mithril import skypilot_names
from sky_mithril.devtools.sandbox import SkySandbox
from sky_mithril.plugin import takeover

NAMES = skypilot_names.NAMES
TABLE = {entry.dotted for entry in NAMES}
SOURCE = Path(sky_mithril.__file__).parent
# Private names of other libraries that sky-mithril's source uses.
NOT_SKYPILOT = {'_replace': 'a namedtuple\'s, in commands/kubeconfig.py',
                '_abc_impl': 'abc, on every ABC subclass'}


def _owner(entry: skypilot_names.SkyPilotName) -> Tuple[Any, str]:
    """The object that holds the entry's last part, and that part."""
    *path, last = entry.name.split('.')
    owner = importlib.import_module(entry.module)
    for part in path:
        owner = getattr(owner, part)
    return owner, last


def _bare_constructor(self: Any, *args: Any, **kwargs: Any) -> None:
    del self, args, kwargs


def _remove(entry: skypilot_names.SkyPilotName,
            monkeypatch: pytest.MonkeyPatch) -> None:
    """Takes the entry out of the installed SkyPilot for this test: the
    module, the attribute from every class that defines it (an enum's member
    too), and for an instance attribute the dataclass field and the
    constructors that set it."""
    if not entry.name:
        monkeypatch.setitem(sys.modules, entry.module, None)
        return
    owner, last = _owner(entry)
    holders = [k for k in owner.__mro__ if k is not object] if isinstance(
        owner, type) else [owner]
    for holder in holders:
        if isinstance(holder, enum.EnumMeta) and last in holder._member_map_:
            monkeypatch.setattr(holder, '_member_map_', {
                k: v for k, v in holder._member_map_.items() if k != last})
        if last in vars(holder):
            monkeypatch.delattr(holder, last)
        if not entry.on_instances:
            continue
        if last in vars(holder).get('__dataclass_fields__', {}):
            monkeypatch.setattr(holder, '__dataclass_fields__', {
                k: f for k, f in holder.__dataclass_fields__.items()
                if k != last})
        constructor = getattr(vars(holder).get('__init__'), '__code__', None)
        if constructor is not None and last in constructor.co_names:
            monkeypatch.setattr(holder, '__init__', _bare_constructor)
    assert entry.lacking() == [entry.dotted], 'the removal did not take'


def _refusal_names(message: str, what: str) -> None:
    version = getattr(sky, '__version__', 'unknown')
    assert what in message.split('lacks: ')[1], message
    assert f'this is SkyPilot {version},' in message
    assert 'skypilot==0.14.1' in message


def _installs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The plugin's install, its wiring steps left out."""
    monkeypatch.setattr(takeover, '_STEPS', ())
    takeover.install()


def _starts_sandbox(tmp_path: Path) -> None:
    SkySandbox(tmp_path, api_url='http://127.0.0.1:9', api_key='unused')


def test_every_name_resolves_on_the_installed_skypilot():
    assert sky.__version__ == '0.14.1'
    assert skypilot_names.lacking(skypilot_names.ALL_SIDES) == []


def test_each_name_is_listed_once_on_a_known_side():
    assert len(TABLE) == len(NAMES)
    assert {e.side for e in NAMES} == set(skypilot_names.ALL_SIDES)


@pytest.mark.parametrize('entry', NAMES, ids=lambda e: e.dotted)
def test_a_missing_name_is_refused_by_name_where_its_side_is_checked(
        entry, monkeypatch, tmp_path):
    _remove(entry, monkeypatch)
    if entry.side in skypilot_names.CHECKED_AT_INSTALL:
        with pytest.raises(skypilot_names.PluginCompatibilityError) as info:
            _installs(monkeypatch)
    else:
        _installs(monkeypatch)  # A dev tool's name never stops the server.
        with pytest.raises(skypilot_names.PluginCompatibilityError) as info:
            _starts_sandbox(tmp_path)
    _refusal_names(str(info.value), entry.dotted)


KEYWORDS = [(entry, keyword) for entry in NAMES for keyword in entry.keywords]


@pytest.mark.parametrize('entry,keyword', KEYWORDS,
                         ids=[f'{e.dotted}({k}=)' for e, k in KEYWORDS])
def test_a_keyword_skypilot_no_longer_takes_is_refused_by_name(
        entry, keyword, monkeypatch, tmp_path):
    owner, last = _owner(entry)
    target = getattr(owner, last)
    signature = inspect.signature(target)
    assert keyword in signature.parameters
    monkeypatch.setattr(target, '__signature__', signature.replace(
        parameters=[p for p in signature.parameters.values()
                    if p.name != keyword]), raising=False)
    with pytest.raises(skypilot_names.PluginCompatibilityError) as info:
        if entry.side in skypilot_names.CHECKED_AT_INSTALL:
            _installs(monkeypatch)
        else:
            _starts_sandbox(tmp_path)
    _refusal_names(str(info.value), f'{entry.dotted}({keyword}=)')


def _watcher_starts(monkeypatch: pytest.MonkeyPatch) -> List[Any]:
    """Records the threads the node hook would start."""
    started: List[Any] = []

    class Recorded:
        def __init__(self, target: Any, **kwargs: Any) -> None:
            del kwargs
            self.target = target

        def start(self) -> None:
            started.append(self.target)

    monkeypatch.setattr(node_hook.threading, 'Thread', Recorded)
    return started


def test_the_skylet_watches_for_notices_when_every_node_name_is_there(
        monkeypatch):
    started = _watcher_starts(monkeypatch)
    node_hook._start_notice_watcher()
    assert started == [node_hook.notice.watch_for_notice]


def test_the_skylet_also_watches_its_nodes_key(monkeypatch):
    started = _watcher_starts(monkeypatch)
    monkeypatch.setattr(node_hook, '_is_skylet', lambda: True)
    node_hook.register(types.SimpleNamespace(  # type: ignore[arg-type]
        register_provisioner=lambda name, module: None))
    assert started == [node_hook.notice.watch_for_notice,
                       node_hook._watch_node_key]


NODE_NAMES = [e for e in NAMES if e.side == skypilot_names.NODE]


@pytest.mark.parametrize('entry', NODE_NAMES, ids=lambda e: e.dotted)
def test_a_missing_node_name_is_logged_by_name_and_nothing_watches(
        entry, monkeypatch, capsys):
    started = _watcher_starts(monkeypatch)
    _remove(entry, monkeypatch)
    node_hook._start_notice_watcher()
    assert started == []
    _refusal_names(capsys.readouterr().err, entry.dotted)


def test_a_refusing_node_keeps_our_provisioner_for_autostop(monkeypatch,
                                                            capsys):
    """Without it the skylet's autodown would reach SkyPilot's built-in
    Mithril code (node_hook._start_notice_watcher)."""
    from sky.skylet import hook_executor
    started = _watcher_starts(monkeypatch)
    monkeypatch.setattr(node_hook, '_is_skylet', lambda: True)
    monkeypatch.delattr(hook_executor, 'try_claim_teardown')
    registered: List[Tuple[str, Any]] = []
    provision = types.SimpleNamespace(register_provisioner=lambda name, module:
                                      registered.append((name, module)))
    node_hook.register(provision)  # type: ignore[arg-type]
    from sky_mithril import provision as ours
    assert registered == [('mithril', ours)]
    # No notice watcher; the node key's watch relies on no such name.
    assert started == [node_hook._watch_node_key]
    _refusal_names(capsys.readouterr().err,
                   'sky.skylet.hook_executor.try_claim_teardown')


# The scan of sky-mithril's source.

PRIVATE_ATTRIBUTE = re.compile(r'\.(_[A-Za-z]\w*)')
SKY_DOTTED = re.compile(r'\bsky(?:\.\w+)+')


def _sources() -> Dict[Path, str]:
    return {path: path.read_text(encoding='utf-8')
            for path in sorted(SOURCE.rglob('*.py'))}


def _trees() -> Dict[Path, ast.Module]:
    return {path: ast.parse(text) for path, text in _sources().items()}


def _defined_by_us() -> Set[str]:
    """The names sky-mithril itself defines: functions, classes, variables,
    parameters, import aliases and its objects' own attributes."""
    names: Set[str] = set()
    for tree in _trees().values():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                                 ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif (isinstance(node, ast.Attribute) and
                  isinstance(node.ctx, ast.Store) and
                  isinstance(node.value, ast.Name) and
                  node.value.id in ('self', 'cls')):
                names.add(node.attr)
            elif isinstance(node, ast.alias):
                names.add(node.asname or node.name.split('.')[-1])
    return names


def _in_table(dotted: str) -> bool:
    """Whether the table lists `dotted` up to its first private part."""
    parts = dotted.split('.')
    private = next(i for i, p in enumerate(parts) if p.startswith('_') and
                   not p.startswith('__'))
    head = '.'.join(parts[:private + 1])
    return any(name == head or name.startswith(head + '.') for name in TABLE)


def _is_private(dotted: str) -> bool:
    return any(p.startswith('_') and not p.startswith('__')
               for p in dotted.split('.'))


def _sky_rooted_private_uses() -> Set[str]:
    """`sky.a._b` written out anywhere (code, strings, comments), and
    `alias._b` where the alias was imported from (or assigned from) `sky`."""
    uses: Set[str] = set()
    for path, text in _sources().items():
        uses.update(f'{m} ({path.name})' for m in SKY_DOTTED.findall(text)
                    if _is_private(m))
        aliases: Dict[str, str] = {}
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or '').split(
                    '.')[0] == 'sky':
                for alias in node.names:
                    aliases[alias.asname or alias.name] = (
                        f'{node.module}.{alias.name}')
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split('.')[0] == 'sky' and alias.asname:
                        aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Assign) and len(node.targets) == 1 and
                    isinstance(node.targets[0], ast.Name)):
                dotted = _dotted(node.value, aliases)
                if dotted:
                    aliases[node.targets[0].id] = dotted
        for node in ast.walk(tree):
            dotted = _dotted(node, aliases)
            if dotted and _is_private(dotted):
                uses.add(f'{dotted} ({path.name})')
    return uses


def _dotted(node: ast.AST, aliases: Dict[str, str]) -> str:
    """`alias.a.b` as `sky.x.a.b`, or '' when not rooted at a sky alias."""
    if isinstance(node, ast.Name):
        return aliases.get(node.id, '')
    if isinstance(node, ast.Attribute):
        root = _dotted(node.value, aliases)
        return f'{root}.{node.attr}' if root else ''
    return ''


def test_every_private_skypilot_name_the_source_uses_is_in_the_table():
    sky_rooted = {use for use in _sky_rooted_private_uses()
                  if not _in_table(use.split(' ')[0])}
    assert not sky_rooted, f'not in skypilot_names.NAMES: {sorted(sky_rooted)}'
    private_parts = {entry.name.split('.')[-1] for entry in NAMES
                     if entry.private}
    used = {m for text in _sources().values()
            for m in PRIVATE_ATTRIBUTE.findall(text)}
    unknown = used - _defined_by_us() - set(NOT_SKYPILOT) - private_parts
    assert not unknown, (
        f'private names used on objects sky-mithril does not define, and not '
        f'in skypilot_names.NAMES: {sorted(unknown)}')


def _our_skypilot_subclasses() -> List[type]:
    """sky-mithril's classes with a SkyPilot class among their bases."""
    classes = []
    for path, tree in _trees().items():
        text = path.read_text(encoding='utf-8')
        if not re.search(r'^\s*(from sky[. ]|import sky\b)', text, re.M):
            continue
        module_name = '.'.join(
            ('sky_mithril',) + path.relative_to(SOURCE).with_suffix('').parts)
        module = importlib.import_module(module_name.removesuffix('.__init__'))
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.col_offset == 0:
                cls = getattr(module, node.name)
                if any(_is_skypilot(k) for k in cls.__mro__[1:]):
                    classes.append(cls)
    return classes


def _is_skypilot(cls: type) -> bool:
    return cls.__module__ == 'sky' or cls.__module__.startswith('sky.')


def _defines(cls: type, name: str) -> bool:
    """Whether `cls` has `name` other than from `object` (every class has
    a `__getstate__`; one that SkyPilot defines is what an override
    overrides)."""
    return any(name in vars(k) for k in cls.__mro__ if k is not object)


def test_every_skypilot_method_sky_mithril_overrides_is_in_the_table():
    ours = set(_our_skypilot_subclasses())
    assert ours, 'no SkyPilot subclass found: the scan is broken'
    unlisted: Set[str] = set()
    for cls in ours:
        skypilot_bases = [k for k in cls.__mro__
                          if k not in ours and _is_skypilot(k)]
        for klass in [k for k in cls.__mro__ if k in ours or
                      k.__module__.startswith('sky_mithril')]:
            for name, value in vars(klass).items():
                dunder = name.startswith('__') and name.endswith('__')
                if name in NOT_SKYPILOT or (dunder and not callable(value)):
                    continue
                bases = [b for b in skypilot_bases if _defines(b, name)]
                if bases and not any(
                        f'{b.__module__}.{b.__qualname__}.{name}' in TABLE
                        for b in bases):
                    unlisted.add(f'{klass.__qualname__}.{name}')
    assert not unlisted, (
        f'overrides not in skypilot_names.NAMES: {sorted(unlisted)}')


def test_the_table_says_which_names_are_private():
    private = {e.dotted for e in NAMES if e.private}
    assert 'sky.execution._execute' in private
    assert 'sky.jobs.recovery_strategy.StrategyExecutor._launch' in private
    assert 'sky.skylet.hook_executor.try_claim_teardown' not in private
