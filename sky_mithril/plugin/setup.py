"""`sky-mithril setup`: list the plugin in SkyPilot's plugins.yaml, keeping
every other plugin and setting that is already there."""

import os
from pathlib import Path
from typing import Any, Dict, List

import yaml

from sky_mithril import files

PLUGIN_CLASS = 'sky_mithril.plugin.MithrilPlugin'
ENV_PLUGINS_CONFIG = 'SKYPILOT_SERVER_PLUGINS_CONFIG'
ENV_REMOTE_PLUGINS_CONFIG = 'SKYPILOT_SERVER_REMOTE_PLUGINS_CONFIG'


def plugins_config_path(remote: bool = False) -> Path:
    """SkyPilot's plugins.yaml (or remote_plugins.yaml), honouring its env overrides."""
    env, default = ((ENV_REMOTE_PLUGINS_CONFIG, '~/.sky/remote_plugins.yaml')
                    if remote else (ENV_PLUGINS_CONFIG, '~/.sky/plugins.yaml'))
    return Path(os.environ.get(env, default)).expanduser()


def _read(path: Path) -> Dict[str, Any]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
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
