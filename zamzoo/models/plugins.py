"""Attention modules from outside the zoo, plugged in the way the zoo's own modules are: a layer name
(zamzoo.layers' registry) plus a row of the zoo table, so that `<backbone>_<name>` exists for every backbone.

    zamzoo.register_attention('mine', MyAttention, reduction=8)     # Python: the class, bound options
    zamzoo.models.plugins.unregister_attention('mine')              # forget it (to register an edited module)
    zamzoo.plugins.load_attention('pkg.module:MyAttention')          # a spec: `pkg.module:Class`
    zamzoo.plugins.load_attention('path/to/file.py:MyAttention')     #      or `path/to/file.py:Class`
    [project.entry-points."zamzoo.attention"] mine = "pkg.module:MyAttention"   # read on `import zamzoo`

The contract is the zoo's: `Module(channels, **options, device=None, dtype=None)`, output shaped like the input.
Plugin models have no pretrained weights. Each registration records where the module came from (the spec, its
source file and that file's sha256, and the sha256 of the user's own modules that file imports) and the options bound
to it: runs write it to config.json as `attention_module`, and
`check_attention_source` refuses to continue a run whose source changed. Whatever reads a run in another process
(eval, export, viz, compare) calls `ensure_attention` with the run's record: the module is imported again from its
spec and registered with the recorded options, unless its source changed.
"""
import ast
import functools
import hashlib
import importlib
import importlib.util
import inspect
import json
import logging
import os
import re
import subprocess
import sys
import sysconfig
import types
from dataclasses import dataclass
from functools import partial
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

from ..errors import UsageError
from ..layers import register_attn, unregister_attn
from ..pretrained import sha256_file
from ._zoo import ATTENTIONS, ZOO, Attention, ModuleSource, add_attention, check_new_attention, remove_attention

__all__ = ['ENTRY_POINT_GROUP', 'RegisteredAttention', 'register_attention', 'unregister_attention', 'load_attention',
           'import_spec', 'load_entry_points', 'failed_entry_points', 'attention_record', 'check_attention_source',
           'ensure_attention', 'recorded_imports', 'recorded_options', 'from_entry_point']

ENTRY_POINT_GROUP = 'zamzoo.attention'
_NAME = re.compile(r'[a-z][a-z0-9_]*\Z')
_FILE_MODULE_PREFIX = 'zamzoo_plugin_'
log = logging.getLogger('zamzoo')


@dataclass(frozen=True)
class RegisteredAttention:
    """What a registration made: the attention's name, where its module came from, and its models."""
    name: str
    spec: str                       # how to import it again: 'pkg.module:Class' or 'path/to/file.py:Class'
    source: Optional[str]           # its source file (absolute), None when Python cannot tell
    sha256: Optional[str]           # of that file
    options: Mapping[str, Any]      # bound to the class: `cls(channels, **options)`
    imports: Mapping[str, str]      # file -> sha256 of the user's own modules the source imports
    models: Mapping[str, str]       # backbone -> registered model name

    def record(self) -> Dict[str, Any]:
        """config.json's `attention_module`."""
        return ModuleSource(self.name, self.spec, self.source, self.sha256, dict(self.options),
                            dict(self.imports))._asdict()


def register_attention(name: str, cls: Callable[..., Any], **options) -> RegisteredAttention:
    """Add attention `name` built by `cls(channels, **options)` to the layers registry and the zoo table, and
    `<backbone>_<name>` for every backbone to timm. The same class (and options) again is a no-op. The options are
    recorded with every run (config.json's `attention_module`), so they must be JSON values."""
    spec = f'{getattr(cls, "__module__", "?")}:{getattr(cls, "__qualname__", repr(cls))}'
    return _register(name, cls, options, spec)


def unregister_attention(name: str) -> None:
    """Forget a module registered at run time and its models (e.g. to register an edited version in a notebook);
    the zoo's own attentions stay."""
    attention = ATTENTIONS.get(name)
    if attention is None or attention.plugin is None:
        raise UsageError(f"attention {name!r} was not registered at run time; only those can be unregistered")
    remove_attention(name)
    unregister_attn(name)


def load_attention(spec: str, name: Optional[str] = None, options: Optional[Mapping[str, Any]] = None
                   ) -> RegisteredAttention:
    """Import `spec` ('pkg.module:Class' or 'path/to/file.py:Class') and register the class under `name`
    (default: the class name in lower case), bound to `options` as `register_attention` binds them. A file's spec
    is recorded with its absolute path."""
    cls, spec = import_spec(spec)
    return _register(name or getattr(cls, '__name__', spec.rpartition(':')[2]).lower(), cls, dict(options or {}),
                     spec)


def import_spec(spec: str) -> Tuple[Callable[..., Any], str]:
    """The class a spec names and the spec to record; UsageError saying what is wrong with the spec."""
    where, sep, attr = spec.rpartition(':') if isinstance(spec, str) else ('', '', '')
    if not (sep and where and attr):
        raise UsageError(f"attention module {spec!r}: expected 'pkg.module:Class' or 'path/to/file.py:Class'")
    if _is_file_spec(where):
        module = _import_file(Path(where))
        spec = f'{module.__file__}:{attr}'
    else:
        module = _import_module(where)
    obj = module
    for part in attr.split('.'):
        obj = getattr(obj, part, None)
        if obj is None:
            raise UsageError(f"attention module {spec!r}: {where} has no '{attr}'")
    return obj, spec


# what importing a user's module may raise: any exception, or SystemExit from code that runs at import
# (argparse's parse_args, sys.exit), which would otherwise end zamzoo itself
_IMPORT_FAILURES = (Exception, SystemExit)


def _is_file_spec(where: str) -> bool:
    return where.endswith('.py') or '/' in where or '\\' in where


def _why(e: BaseException) -> str:
    if isinstance(e, SystemExit):
        return (f'SystemExit({e.code!r}): it exits when imported (argparse or sys.exit at module level? guard that '
                f"code with if __name__ == '__main__')")
    return f'{type(e).__name__}: {e}'


def _import_module(module_name: str):
    """The module, imported once per process as Python does; UsageError when its file changed since zamzoo first
    asked for it here (Python keeps the old code, and a run would record the new file's sha256 with it)."""
    try:
        module = importlib.import_module(module_name)
    except _IMPORT_FAILURES as e:
        raise UsageError(f"attention module: cannot import '{module_name}' ({_why(e)})") from e
    source = getattr(module, '__file__', None)
    if source and Path(source).is_file():
        _unchanged_since_import(module, source, f"attention module '{module_name}': {source}")
    return module


def _unchanged_since_import(module, path, what: str) -> str:
    """The sha256 of `module`'s file `path`; UsageError, saying `what` changed, when it is not the file this process
    imported (the sha256 the first call noted on the module)."""
    sha256 = sha256_file(path)
    if vars(module).setdefault('__zamzoo_sha256__', sha256) != sha256:
        raise UsageError(f'{what} changed since this process imported it, and Python keeps the code it imported: '
                         f'start a new process to use the edited module')
    return sha256


def _import_file(path: Path):
    """The module of a .py file, under a name stable for the file's absolute path (so a second load in the same
    process reuses it while the file is unchanged)."""
    if not path.is_file():
        raise UsageError(f'attention module: {path} is not a file')
    path = path.resolve()
    stem = re.sub(r'\W', '_', path.stem)
    module_name = f'{_FILE_MODULE_PREFIX}{stem}_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}'
    sha256 = sha256_file(path)
    loaded = sys.modules.get(module_name)
    if loaded is not None and getattr(loaded, '__zamzoo_sha256__', None) == sha256:
        return loaded
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(module_spec)
    module.__zamzoo_sha256__ = sha256
    sys.modules[module_name] = module
    try:
        module_spec.loader.exec_module(module)
    except _IMPORT_FAILURES as e:
        del sys.modules[module_name]
        raise UsageError(f'attention module: importing {path} failed: {_why(e)}') from e
    return module


def _register(name: str, cls: Callable[..., Any], options: dict, spec: str) -> RegisteredAttention:
    """Check everything, then register the layer, then the zoo row (nothing is half-registered)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise UsageError(f'attention name {name!r}: expected a lowercase name of letters, digits and _ that starts '
                         f'with a letter, e.g. my_attn')
    if not callable(cls):
        raise UsageError(f'attention {name!r}: expected a module class (or factory), got {cls!r}')
    _check_options(name, options)
    problem = signature_problem(cls, options, getattr(cls, '__name__', 'the module'))
    if problem is not None:  # every model of it would fail to build, each with a TypeError
        raise UsageError(f'attention {name!r}: {problem}')
    factory = partial(cls, **options) if options else cls
    existing = ATTENTIONS.get(name)
    if existing is not None and existing.plugin is not None:
        register_attn(name, factory, check_only=True)  # another class under this name: UsageError
        return _registered(existing)
    check_new_attention(name)
    register_attn(name, factory, check_only=True)
    source = _source_file(cls)
    imports = _imported_sources(cls, source)
    register_attn(name, factory)
    add_attention(Attention(
        name=name, layer=name, description=f'{spec} (a module registered at run time), in every block',
        plugin=ModuleSource(name, spec, source, source and sha256_file(source), dict(options), imports)))
    return _registered(ATTENTIONS[name])


def signature_problem(attn: Callable[..., Any], options: Mapping[str, Any], label: str) -> Optional[str]:
    """Why `attn` cannot be called as timm's blocks build an attention module: the channels first, then the
    options, the device and the dtype (a class whose first argument is `device` would get the channels as its
    device); None where it can, or has no signature to read (a builtin: its calls will tell)."""
    try:
        signature = inspect.signature(attn)
    except (TypeError, ValueError):
        return None
    try:
        signature.bind(64, **options, device=None, dtype=None)
    except TypeError as e:
        return (f"{label} cannot be called as timm's blocks build an attention module, {label}(channels, **options, "
                f'device=..., dtype=...) ({e}); expected __init__(self, channels, ..., device=None, dtype=None)')
    return None


def _check_options(name: str, options: Mapping[str, Any]):
    """Options must read back from config.json as they are: another process (a zoo worker, eval, export, a resume)
    rebuilds the module from the run's record, and must build the same module."""
    try:
        exact = json.loads(json.dumps(options, allow_nan=False)) == options
    except (TypeError, ValueError):
        exact = False
    if not exact:
        raise UsageError(f'attention {name!r}: options {options!r} cannot be recorded in a run\'s config.json as '
                         f'they are; expected JSON values (numbers, strings, booleans, None, lists, dicts with '
                         f'string keys; a list, not a tuple), so that another process builds the same module. Bind '
                         f'other values in a subclass with those defaults, and register that')


def _source_file(cls) -> Optional[str]:
    try:
        source = inspect.getsourcefile(getattr(cls, 'func', cls))
    except (TypeError, OSError):  # built-in, or defined where Python keeps no file (`python -c`, a REPL)
        return None
    return str(Path(source).resolve()) if source and Path(source).is_file() else None


_INSTALLED = tuple(Path(sysconfig.get_paths()[key]).resolve() for key in ('stdlib', 'platstdlib'))
_ZAMZOO_PACKAGE = Path(__file__).resolve().parents[1]


def _own_code(module) -> Optional[Path]:
    """The source file of `module` when it is the user's own code; None for the standard library, installed packages
    and zamzoo (a run records zamzoo's version; a new one must not make its runs unresumable)."""
    file = getattr(module, '__file__', None)
    path = Path(file).resolve() if isinstance(file, str) and file.endswith('.py') and Path(file).is_file() else None
    if path is None or {'site-packages', 'dist-packages'} & set(path.parts) or _ZAMZOO_PACKAGE in path.parents:
        return None
    return None if any(root in path.parents for root in _INSTALLED) else path


def _imported_sources(cls, source: Optional[str]) -> Dict[str, str]:
    """{file: sha256} of the user's own modules that the class's module uses, directly or through each other (their
    import statements, a value imported from one included, their parent packages, and the modules of the classes
    and functions they hold): an edit to a helper file changes the module as its own file does. UsageError when one
    changed since this process imported it (Python keeps the code it imported)."""
    first = sys.modules.get(getattr(getattr(cls, 'func', cls), '__module__', None) or '')
    if first is None or source is None:
        return {}
    seen, todo, files = {first.__name__}, [first], {}
    while todo:
        for module in _modules_used_by(todo.pop()):
            path = _own_code(module) if module.__name__ not in seen else None
            if path is None:
                continue
            seen.add(module.__name__)
            todo.append(module)
            if str(path) != source:
                files[str(path)] = _unchanged_since_import(module, path, f'{path}, which the attention module imports,')
    return dict(sorted(files.items()))


def _modules_used_by(module) -> List[types.ModuleType]:
    """The modules `module` holds, or holds a class or function of, those its file's import statements name (`from
    consts import BIAS` names consts) where importing the file runs them, and its parent packages, as this process
    imported them."""
    names = {module.__name__.rsplit('.', i)[0] for i in range(1, module.__name__.count('.') + 1)}
    own_submodule = f'{module.__name__}.' if hasattr(module, '__path__') else None
    for value in list(vars(module).values()):
        if isinstance(value, types.ModuleType):  # not a package's submodules: whatever the process imported is there
            names.update([] if own_submodule and value.__name__.startswith(own_submodule) else [value.__name__])
        elif isinstance(value, (type, types.FunctionType)):
            names.add(getattr(value, '__module__', None) or '')
    try:  # bytes: the file's BOM or coding line decides, as for Python's import
        tree = ast.parse(Path(module.__file__).read_bytes())
    except (OSError, SyntaxError, ValueError, TypeError):  # no file (built at run time), or gone: names as above
        tree = ast.Module(body=[], type_ignores=[])
    for node in _run_on_import(tree.body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            try:
                base = importlib.util.resolve_name('.' * node.level + (node.module or ''), module.__package__ or '')
            except (ImportError, ValueError):
                continue
            names.update([base, *(f'{base}.{alias.name}' for alias in node.names)])  # a submodule imported by name
    return [sys.modules[name] for name in sorted(names) if name in sys.modules]


def _run_on_import(statements: list) -> Iterator[ast.stmt]:
    """The statements among `statements` that importing their file runs: not a function's body (a module a function
    imports when it is called is in one process's sys.modules and not in another's: a sweep's worker, a new process,
    would record other files than the process that planned it), nor `if TYPE_CHECKING:`."""
    for node in statements:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in {getattr(node.test, 'id', None),
                                                            getattr(node.test, 'attr', None)}:
            yield from _run_on_import(node.orelse)
            continue
        for field in ('body', 'orelse', 'finalbody', 'handlers'):
            yield from _run_on_import(getattr(node, field, None) or [])
        for case in getattr(node, 'cases', None) or []:
            yield from _run_on_import(case.body)


def _registered(attention: Attention) -> RegisteredAttention:
    models = {e.backbone.name: e.name for e in ZOO.values() if e.attention.name == attention.name}
    return RegisteredAttention(*attention.plugin, models=models)


_FAILED_ENTRY_POINTS: Dict[str, str] = {}  # entry point name -> why it is not registered


def failed_entry_points() -> Dict[str, str]:
    """Entry points of the group `zamzoo.attention` that could not be registered: name -> 'value: Type: message'
    (not those of a name registered since)."""
    return {name: why for name, why in _FAILED_ENTRY_POINTS.items() if name not in ATTENTIONS}


def unregistered_models(pattern: str) -> Optional[str]:
    """Why models matching `pattern` (a model name or fnmatch wildcard) are missing: 'the attention entry point(s)
    NAME (why) could not be registered, so its models are missing'; None where no failed entry point's are."""
    from fnmatch import fnmatchcase

    from ._zoo import BACKBONES
    broken = [f'{name} ({why})' for name, why in failed_entry_points().items()
              if any(fnmatchcase(f'{backbone}_{name}', pattern) for backbone in BACKBONES)]
    return (f"the attention entry point(s) {'; '.join(broken)} could not be registered, so its models are missing"
            if broken else None)


def load_entry_points() -> None:
    """Register every entry point of the group `zamzoo.attention` (`name = "pkg.module:Class"`); one that cannot be
    loaded or registered is a warning on the 'zamzoo' logger, naming it, and is kept in `failed_entry_points()` so
    that a command asked for its models says why they are missing."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            _register(ep.name, ep.load(), {}, ep.value)
        except _IMPORT_FAILURES as e:  # a broken plugin must not break `import zamzoo`
            _FAILED_ENTRY_POINTS[ep.name] = f'{ep.value}: {_why(e)}'
            log.warning('zamzoo: attention entry point %s = %r (group %s) is not registered: %s',
                        ep.name, ep.value, ENTRY_POINT_GROUP, _why(e))


def from_entry_point(record: Mapping[str, Any]) -> bool:
    """Whether the module of an `attention_module` record is an entry point's (which every process registers on
    `import zamzoo`), under its name and without options."""
    return not recorded_options(record) and any(ep.name == record.get('name') and ep.value == record.get('spec')
                                                for ep in entry_points(group=ENTRY_POINT_GROUP))


def attention_record(model_name: str) -> Optional[Dict[str, Any]]:
    """config.json's `attention_module` of a model: where its plugin module came from; None for the zoo's own
    modules and models outside the zoo."""
    entry = ZOO.get(model_name.split('.', 1)[0])
    return None if entry is None or entry.attention.plugin is None else entry.attention.plugin._asdict()


def check_attention_source(recorded: Optional[Mapping[str, Any]], current: Optional[Mapping[str, Any]] = None):
    """UsageError naming the file when the source of a run's attention module (config.json's `attention_module`)
    is missing or changed since it was recorded, or when the module registered now (`current`) is another one or
    bound to other options."""
    if not recorded:
        return
    _check_options_agree(recorded, current)
    if not recorded.get('source') or (current is not None and _same_code(recorded, current)):
        return  # the same files, wherever they are now (the package installed in another environment)
    source = Path(recorded['source'])
    if not source.is_file():
        other = f" (the one imported now, from {current.get('source')}, holds other code)" if current else ''
        raise UsageError(f"the attention module of this run ({recorded['spec']}) was read from {source}, which is "
                         f'gone{other}; restore it, or start new runs (another --out)')
    now = sha256_file(source)
    if now != recorded['sha256']:
        raise UsageError(f"the attention module's source {source} changed since the run started (sha256 "
                         f"{recorded['sha256'][:12]}..., now {now[:12]}...); restore it, or start new runs (another "
                         f'--out)')
    for path, sha256 in recorded_imports(recorded).items():
        now = sha256_file(path) if Path(path).is_file() else None
        if now != sha256:
            how = 'is gone' if now is None else (f'changed since the run started (sha256 {sha256[:12]}..., now '
                                                 f'{now[:12]}...)')
            raise UsageError(f"{path}, which the attention module's source {source} imports, {how}; restore it, or "
                             f'start new runs (another --out)')
    if current is not None:  # the files at the recorded paths are the run's; the module registered now is not
        _check_same_module(recorded, current)


def _check_same_module(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> None:
    """UsageError saying how the module registered now (`current`) is not the run's, whose files are in place."""
    if _same_code(dict(recorded, spec=current.get('spec')), current):
        raise UsageError(f"this run's attention module was registered as {recorded['spec']}; the one registered now "
                         f"is {current.get('spec')} (the same files): register it as the run did")
    if _is_file_spec(recorded['spec'].split(':', 1)[0]):
        how = f"pass --attn {recorded['spec']}"
    else:
        how = f'put {_import_root(recorded)} first on PYTHONPATH, so that Python imports the run\'s'
    raise UsageError(f"this run's attention module came from {recorded['source']}; the one registered now "
                     f"({current.get('spec')}, from {current.get('source')}) holds other code: {how}")


def _same_code(recorded: Mapping[str, Any], current: Mapping[str, Any]) -> bool:
    """Whether a module registered now is a run's by content: its spec, its file's sha256 and those of the files it
    imports (by content, not by path)."""
    return (current.get('spec') == recorded.get('spec') and current.get('sha256') == recorded.get('sha256')
            and sorted(recorded_imports(current).values()) == sorted(recorded_imports(recorded).values()))


def _check_options_agree(recorded: Mapping[str, Any], current: Optional[Mapping[str, Any]]):
    if current is not None and recorded_options(current) != recorded_options(recorded):
        raise UsageError(f"this run's attention module {recorded.get('name')!r} was built with the options "
                         f'{recorded_options(recorded)}; the one registered now has {recorded_options(current)}: '
                         f'register it with the options of the run (or start a new run)')


def _import_root(record: Mapping[str, Any]) -> Path:
    """The folder on sys.path from which the module spec of `record` imports its recorded source file."""
    module, path = record['spec'].split(':', 1)[0], Path(record['source'])
    return (path.parent if path.name == '__init__.py' else path).parents[len(module.split('.')) - 1]


def check_importable_in_new_process(record: Mapping[str, Any], what: str) -> None:
    """UsageError when a new process started here (this working directory and environment, as a zoo worker is) would
    not import the module of `record` (a module spec's `attention_module`) from the file this process did: this
    process's sys.path may hold a folder (the script's own, a sys.path.insert) that a new process lacks."""
    module, source = record['spec'].split(':', 1)[0], record.get('source')
    if not source or _is_file_spec(module):
        return
    found = _new_process_origin(module, os.getcwd(), os.environ.get('PYTHONPATH'))
    if found is not None and Path(found).resolve() == Path(source).resolve():
        return
    root = _import_root(record)
    elsewhere = f'imports {module!r} from {found}' if found else f'cannot import {module!r}'
    raise UsageError(f"{what}: its attention module {record['spec']} was imported here from {source}, but a new "
                     f'process started in {os.getcwd()} (a zoo worker) {elsewhere}: add {root} to PYTHONPATH (or '
                     f'start from that folder), or install the package that holds it')


@functools.lru_cache(maxsize=None)
def _new_process_origin(module: str, cwd: str, pythonpath: Optional[str]) -> Optional[str]:
    """The file a new Python process in `cwd` finds `module` in (None: not found); cached per working directory and
    PYTHONPATH (a sweep asks once per model)."""
    code = ('import importlib.util, sys\ntry:\n    s = importlib.util.find_spec(sys.argv[1])\nexcept Exception:\n'
            '    s = None\nprint(s.origin if s and s.origin else "")')
    done = subprocess.run([sys.executable, '-c', code, module], cwd=cwd, capture_output=True, text=True, timeout=300)
    return done.stdout.strip() or None


def recorded_imports(record: Mapping[str, Any]) -> Dict[str, str]:
    """The imported files of an `attention_module` record ({} in records written before they were recorded)."""
    return dict(record.get('imports') or {})


def recorded_options(record: Mapping[str, Any]) -> Dict[str, Any]:
    """The options of an `attention_module` record ({} in records written before options were recorded)."""
    return dict(record.get('options') or {})


def ensure_attention(recorded: Optional[Mapping[str, Any]]) -> None:
    """Make the module a run recorded (config.json's `attention_module`) registered in this process, importing it
    from its spec when it is not yet; UsageError naming the file when its source is gone or changed since the run
    recorded it, or when another module is registered under its name. Nothing to do for the zoo's own modules."""
    if not recorded:
        return
    loading = recorded.get('name') not in ATTENTIONS
    if loading:
        try:  # from where this process imports it (a package may be installed elsewhere now): its files decide
            load_attention(recorded['spec'], recorded['name'], recorded_options(recorded))
        except UsageError:
            check_attention_source(recorded)  # the recorded file gone or changed: said so
            raise
    attention = ATTENTIONS[recorded['name']]
    try:
        check_attention_source(recorded, attention.plugin._asdict() if attention.plugin is not None else None)
    except UsageError:
        if loading:  # nothing stays registered from other code than the run's
            unregister_attention(recorded['name'])
        raise
