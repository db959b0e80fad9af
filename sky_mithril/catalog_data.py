"""Where the shipped GPU catalog and examples live, readable without importing SkyPilot.

The catalog is `catalog/vms.csv` at the repository root, shipped inside the
wheel as `sky_mithril/data/vms.csv`. `SKY_MITHRIL_CATALOG` points at another
CSV of the same columns (a freshly refreshed one, or a test market's).
"""

import csv
import os
import shutil
from pathlib import Path
from typing import Dict, List

ENV_CATALOG = 'SKY_MITHRIL_CATALOG'
COLUMNS = ('InstanceType', 'AcceleratorName', 'AcceleratorCount', 'vCPUs',
           'MemoryGiB', 'Price', 'SpotPrice', 'Region', 'GpuInfo')

_PACKAGED = Path(__file__).parent / 'data' / 'vms.csv'
_SOURCE_TREE = Path(__file__).parent.parent / 'catalog' / 'vms.csv'
_PACKAGED_EXAMPLES = Path(__file__).parent / 'data' / 'examples'
_SOURCE_EXAMPLES = Path(__file__).parent.parent / 'examples'


def catalog_path() -> Path:
    """The CSV in use: $SKY_MITHRIL_CATALOG, else the wheel's, else the source tree's."""
    override = os.environ.get(ENV_CATALOG)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f'{ENV_CATALOG}={override} is not a file. Point it at a '
                f'catalog CSV or unset it to use the shipped catalog.')
        return path
    return _PACKAGED if _PACKAGED.is_file() else _SOURCE_TREE


def example_path(name: str) -> Path:
    """A shipped example task YAML (`examples/NAME` in the source tree)."""
    packaged = _PACKAGED_EXAMPLES / name
    return packaged if packaged.is_file() else _SOURCE_EXAMPLES / name


def skypilot_catalog_file(sky_dir: Path, schema_version: str) -> Path:
    """Where SkyPilot itself looks for Mithril's catalog under `~/.sky`."""
    return sky_dir / 'catalogs' / schema_version / 'mithril' / 'vms.csv'


def publish_for_skypilot(target: Path) -> bool:
    """Copies our catalog to where SkyPilot looks for Mithril's catalog.

    The `sky` client loads no plugin; when a task names an `instance_type`,
    it validates it against that file and would otherwise download
    SkyPilot's own Mithril catalog from the internet. SkyPilot never
    overwrites a catalog file it did not download itself. Returns whether
    the file changed.
    """
    source = catalog_path()
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix('.tmp')
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return True


def read_rows(path: Path) -> List[Dict[str, str]]:
    """The catalog rows as dicts of strings, checked for SkyPilot's columns."""
    with path.open(newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f'Catalog {path} lacks columns {missing}.')
        return list(reader)
