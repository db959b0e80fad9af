"""`sky-mithril setup`: list the plugin in SkyPilot's plugins.yaml, keeping
every other plugin and setting that is already there; for remote
controllers, point `controller_wheel_path` at a folder with our wheel."""

import os
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

from sky_mithril import __version__
from sky_mithril import files

PLUGIN_CLASS = 'sky_mithril.plugin.MithrilPlugin'
ENV_PLUGINS_CONFIG = 'SKYPILOT_SERVER_PLUGINS_CONFIG'
ENV_REMOTE_PLUGINS_CONFIG = 'SKYPILOT_SERVER_REMOTE_PLUGINS_CONFIG'
WHEEL_PATH_KEY = 'controller_wheel_path'
# Where `setup --remote` looks for our wheel when plugins.yaml names no folder.
DEFAULT_WHEEL_DIR = '~/.sky/mithril-wheels'
_CHECKOUT = Path(__file__).resolve().parents[2]


def plugins_config_path(remote: bool = False) -> Path:
    """SkyPilot's plugins.yaml (or remote_plugins.yaml), honouring its env overrides."""
    env, default = ((ENV_REMOTE_PLUGINS_CONFIG, '~/.sky/remote_plugins.yaml')
                    if remote else (ENV_PLUGINS_CONFIG, '~/.sky/plugins.yaml'))
    return Path(os.environ.get(env, default)).expanduser()


def _read(path: Path) -> Dict[str, Any]:
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, 'problem_mark', None)
        where = f' (line {mark.line + 1})' if mark is not None else ''
        raise ValueError(
            f'{path} is not valid YAML{where}. Fix it by hand, or move it '
            'aside and run `sky-mithril setup` again; sky-mithril will not '
            'overwrite it.') from None
    if not isinstance(data, dict) or not isinstance(data.get('plugins', []),
                                                    list):
        raise ValueError(
            f'{path} is not a SkyPilot plugins file (a mapping with a '
            '`plugins:` list). Fix it by hand; sky-mithril will not overwrite it.')
    return data


def publish_catalog(sky_dir: Path) -> Path:
    """Our catalog where the plugin-less `sky` client looks for Mithril's."""
    from sky.skylet import constants  # pylint: disable=import-outside-toplevel

    from sky_mithril.catalog import catalog_files  # pylint: disable=import-outside-toplevel
    target = catalog_files.skypilot_catalog_file(sky_dir,
                                                constants.CATALOG_SCHEMA_VERSION)
    catalog_files.publish_for_skypilot(target)
    return target


def enable_plugin(path: Path) -> bool:
    """Adds our plugin entry to `path`; False when it was already listed."""
    data = _read(path)
    entries: List[Dict[str, Any]] = data.setdefault('plugins', [])
    if any(isinstance(e, dict) and e.get('class') == PLUGIN_CLASS
           for e in entries):
        return False
    entries.append({'class': PLUGIN_CLASS})
    files.write_atomically(path, yaml.safe_dump(data, sort_keys=False))
    return True


def our_wheel(folder: Path) -> Optional[Path]:
    """This version's wheel in `folder`, if there is one."""
    found = sorted(folder.expanduser().glob(
        f'sky_mithril-{__version__}-*.whl'))
    return found[-1] if found else None


def wheel_build_command(folder: str) -> str:
    """The command that puts this version's wheel in `folder`: built from
    the checkout this code runs from, else fetched from PyPI."""
    if (_CHECKOUT / 'pyproject.toml').is_file():
        return f'pip wheel --no-deps {_CHECKOUT} -w {folder}'
    return (f'pip download --no-deps --only-binary :all: '
            f'sky-mithril=={__version__} -d {folder}')


def set_controller_wheel_path(path: Path) -> str:
    """Points `controller_wheel_path` in plugins.yaml at a folder holding
    this version's wheel, which SkyPilot uploads to remote controllers: the
    folder already named there, else DEFAULT_WHEEL_DIR. Returns what it did,
    or, when the folder has no wheel, the exact commands that finish it."""
    data = _read(path)
    folder = str(data.get(WHEEL_PATH_KEY) or DEFAULT_WHEEL_DIR)
    wheel = our_wheel(Path(folder))
    if wheel is None:
        return (f'Not done yet: remote controllers install sky-mithril from a '
                f'wheel, and {folder} has none of version {__version__}. Put '
                f'one there with `{wheel_build_command(folder)}`, then run '
                f'`sky-mithril setup --remote` again: it sets {WHEEL_PATH_KEY} '
                f'in {path}.')
    if data.get(WHEEL_PATH_KEY) == folder:
        return f'{WHEEL_PATH_KEY} in {path} is {folder} (has {wheel.name})'
    data[WHEEL_PATH_KEY] = folder
    files.write_atomically(path, yaml.safe_dump(data, sort_keys=False))
    return f'Set {WHEEL_PATH_KEY}: {folder} in {path} (has {wheel.name})'
