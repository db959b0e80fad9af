"""Where the shipped GPU catalog and examples live, readable without importing SkyPilot.

The catalog is `catalog/vms.csv` at the repository root, shipped inside the
wheel as `sky_mithril/data/vms.csv`. `SKY_MITHRIL_CATALOG` points at another
CSV of the same columns (a freshly refreshed one, or a test market's).
"""

import csv
import os
import io
from pathlib import Path
from typing import Dict, List, Optional

from sky_mithril import files

ENV_CATALOG = 'SKY_MITHRIL_CATALOG'
COLUMNS = ('InstanceType', 'AcceleratorName', 'AcceleratorCount', 'vCPUs',
           'MemoryGiB', 'Price', 'SpotPrice', 'Region', 'GpuInfo')

_PACKAGE = Path(__file__).parent.parent
_PACKAGED = _PACKAGE / 'data' / 'vms.csv'
_SOURCE_TREE = _PACKAGE.parent / 'catalog' / 'vms.csv'
_PACKAGED_EXAMPLES = _PACKAGE / 'data' / 'examples'
_SOURCE_EXAMPLES = _PACKAGE.parent / 'examples'


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


def refresh_target() -> Optional[Path]:
    """Where `sky-mithril catalog refresh` writes by default: the catalog
    $SKY_MITHRIL_CATALOG names (the one in use), else the source tree's
    when running from a checkout; None from an installed wheel, whose own
    catalog is not to be rewritten."""
    override = os.environ.get(ENV_CATALOG)
    if override:
        return Path(override).expanduser().resolve()
    return _SOURCE_TREE if _SOURCE_TREE.is_file() else None


def example_path(name: str) -> Path:
    """A shipped example task YAML (`examples/NAME` in the source tree)."""
    packaged = _PACKAGED_EXAMPLES / name
    return packaged if packaged.is_file() else _SOURCE_EXAMPLES / name


def example_names() -> List[str]:
    """The shipped example task YAMLs' file names, sorted: the wheel's
    (`sky_mithril/data/examples/`), else the source tree's."""
    folder = _PACKAGED_EXAMPLES if _PACKAGED_EXAMPLES.is_dir() else _SOURCE_EXAMPLES
    return sorted(p.name for p in folder.glob('*.yaml'))


def skypilot_catalog_file(sky_dir: Path, schema_version: str) -> Path:
    """Where SkyPilot itself looks for Mithril's catalog under `~/.sky`."""
    return sky_dir / 'catalogs' / schema_version / 'mithril' / 'vms.csv'


def publish_for_skypilot(target: Path, source: Optional[Path] = None) -> bool:
    """Copies our catalog (or `source`, e.g. the live overlay) to where
    SkyPilot looks for Mithril's catalog.

    The `sky` client loads no plugin; when a task names an `instance_type`,
    it validates it against that file and would otherwise download
    SkyPilot's own Mithril catalog from the internet. SkyPilot never
    overwrites a catalog file it did not download itself. Returns whether
    the file changed.
    """
    source = source or catalog_path()
    if target.is_file() and target.read_bytes() == source.read_bytes():
        return False
    files.write_atomically(target, source.read_bytes())
    return True


def read_rows(path: Path) -> List[Dict[str, str]]:
    """The catalog rows as dicts of strings, checked for SkyPilot's columns."""
    with path.open(newline='', encoding='utf-8') as f:
        reader = csv.DictReader(f)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f'Catalog {path} lacks columns {missing}.')
        return list(reader)


def rows_csv(rows: List[Dict[str, str]], path: Path) -> str:
    """`rows` as the text of the catalog at `path`, in SkyPilot's columns;
    refuses no rows, so `path` is never replaced by an empty catalog."""
    if not rows:
        raise ValueError('The API returned no priced auctions; the catalog '
                         f'at {path} was left as it was.')
    text = io.StringIO(newline='')
    writer = csv.DictWriter(text, fieldnames=COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def write_rows(rows: List[Dict[str, str]], path: Path) -> None:
    """Writes `rows` in SkyPilot's catalog columns, replacing `path` atomically."""
    files.write_atomically(path, rows_csv(rows, path))
