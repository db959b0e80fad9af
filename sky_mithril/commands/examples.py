"""`sky-mithril examples [NAME]`: the example task YAMLs the wheel ships
(`sky_mithril/data/examples/`), listed or written out, so a pip user has
`hello.yaml` to launch without a checkout."""

from typing import Optional

import click

from sky_mithril.catalog import catalog_files
from sky_mithril.commands import options
from sky_mithril.commands.output import CommandError, print_table


def _summary(name: str) -> str:
    """What an example shows: the first sentence of its opening comment,
    down to the part before its colon when that sentence is long."""
    words = []
    for line in catalog_files.example_path(name).read_text(
            encoding='utf-8').splitlines():
        if not line.startswith('# ') or line.startswith('#   '):
            break
        words.append(line[2:].strip())
    sentence = ' '.join(words).split('. ')[0].rstrip('.')
    return sentence.split(':')[0] if len(sentence) > 72 else sentence


@click.command('examples', short_help='The shipped example tasks.', epilog=options.examples(
    'sky-mithril examples                        # what there is',
    'sky-mithril examples hello > hello.yaml     # then: sky launch -c hello hello.yaml',
    'sky-mithril examples managed-train.yaml'))
@click.argument('name', required=False, metavar='[NAME]')
def examples_command(name: Optional[str]) -> int:
    """The example tasks shipped with sky-mithril: without NAME, a list;
    with it (hello or hello.yaml), that task's YAML on stdout."""
    names = catalog_files.example_names()
    if name is None:
        print_table(('NAME', 'WHAT IT SHOWS'),
                    [(n.removesuffix('.yaml'), _summary(n)) for n in names])
        print('\nWrite one out: `sky-mithril examples hello > hello.yaml`.')
        return 0
    wanted = name if name.endswith('.yaml') else f'{name}.yaml'
    if wanted not in names:
        raise CommandError(
            f'No example {name!r}; there are: '
            f'{", ".join(n.removesuffix(".yaml") for n in names)}.')
    print(catalog_files.example_path(wanted).read_text(encoding='utf-8'),
          end='')
    return 0
