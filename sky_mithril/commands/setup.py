"""`sky-mithril setup`: list the plugin where SkyPilot loads it, and with
`--api-key` store the user's Mithril API key, checked first, in the file
Mithril's own `ml setup` writes, so a user needs neither `ml` (which cannot
live beside stock SkyPilot) nor a hand-written YAML. The key is read without
echo and never printed."""

import os
import sys
from pathlib import Path
from typing import List, Optional

import click

from sky_mithril.account import credentials
from sky_mithril.api import client as client_lib
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.catalog import catalog_files
from sky_mithril.catalog import live_prices
from sky_mithril.commands import options
from sky_mithril.commands.output import CommandError, interactive, pick
from sky_mithril.plugin import setup as setup_lib

KEY_SOURCE = ('An API key comes from Mithril\'s web console '
              '(https://mithril.ai, its API keys page)')
ML_INSTALL = ('Mithril\'s own CLI can write the same file from an environment '
              'of its own: `pipx install mithril-client`, then `ml setup`')


def read_api_key() -> str:
    """The key: asked without echo at a terminal, else the first line of
    stdin (`sky-mithril setup --api-key < key-file`)."""
    if interactive():
        key = click.prompt(f'{KEY_SOURCE}.\nMithril API key (input hidden)',
                           hide_input=True, default='', show_default=False)
    else:
        key = sys.stdin.readline()
    key = key.strip()
    if not key:
        raise CommandError(
            f'No API key was given. {KEY_SOURCE}; paste it at the prompt of '
            '`sky-mithril setup --api-key` in a terminal, or pipe it in: '
            '`sky-mithril setup --api-key < key-file`.')
    return key


def choose_project(projects: List[models.Project],
                   wanted: Optional[str]) -> models.Project:
    """`wanted` (a name or fid) among the key's projects; else its only
    project; else, at a terminal, the one a person picks."""
    names = ', '.join(f'{p.name} ({p.fid})' for p in projects) or 'none'
    if wanted:
        for project in projects:
            if wanted in (project.fid, project.name):
                return project
        raise CommandError(f'No project {wanted!r} is visible to this API key; '
                           f'its projects: {names}. Nothing was written.')
    if not projects:
        raise CommandError('This API key sees no Mithril project; create one '
                           'in Mithril\'s console first. Nothing was written.')
    if len(projects) == 1:
        return projects[0]
    fid = pick('project', [(p.fid, f'{p.name} ({p.fid})') for p in projects],
               f'--project (one of {names})')
    return next(p for p in projects if p.fid == fid)


def store_api_key(profile: str, api_url: str,
                  project: Optional[str]) -> None:
    """Reads the key, checks it with `GET /v2/me`, chooses the project, and
    writes the profile (mode 600); nothing is written when a step fails."""
    credentials.check_api_url(api_url, '--api-url')
    key = read_api_key()
    try:
        with client_lib.MithrilClient(key, api_url,
                                      retry_refused=False) as client:
            me = client.me()
            projects = client.list_projects()
    except errors.AuthenticationError as e:
        raise CommandError(f'Mithril at {api_url} rejected this API key (401); '
                           f'nothing was written. {KEY_SOURCE}.') from e
    chosen = choose_project(projects, project)
    path = credentials.save_profile(profile, key, chosen.fid, api_url)
    print(f'The key works (GET /v2/me: {me.email}). Saved profile {profile!r} '
          f'(project {chosen.name}, {chosen.fid}; API {api_url}) in '
          f'{credentials.display_path(path)}, mode 600; it is the current '
          'profile now.')
    shadowing = [name for name in (credentials.ENV_API_KEY,
                                   credentials.ENV_PROJECT,
                                   credentials.ENV_API_URL,
                                   credentials.ENV_PROFILE)
                 if os.environ.get(name)]
    if shadowing:
        print(f'Note: {", ".join(shadowing)} set in this shell win over the '
              'profile; unset them to use it.')


def _has_credentials() -> bool:
    try:
        credentials.load_credentials()
    except credentials.CredentialsError:
        return False
    return True


def _add_live_market() -> str:
    """Lays the project's market over the catalog just installed
    (`live_prices.refresh`, which publishes it for the `sky` client too), and
    says what it found. The shipped catalog lists no CPU VM types (Mithril
    publishes none, and which ones a project can buy is its own); without
    them the client refuses a CPU VM `instance_type` until the API server
    reads the market."""
    live_prices.refresh()
    if not live_prices.snapshot().live:
        return ('Could not read Mithril\'s market now; the catalog lists '
                'your project\'s CPU VM types once the API server reads it.')
    cpu_types = sorted({
        row['InstanceType'] for row in
        catalog_files.read_rows(live_prices.overlay_path())
        if not row['AcceleratorName']})
    return ('Added your project\'s live market to it'
            f'{": CPU VM types " + ", ".join(cpu_types) if cpu_types else ""}.')


@click.command('setup', short_help='Enable the plugin; store your Mithril API key.', epilog=options.examples(
    'sky-mithril setup --api-key                     # paste the key at the prompt',
    'sky-mithril setup --api-key --project my-team < key-file',
    'sky-mithril setup --remote   # also for a managed-jobs controller on another cloud'))
@click.option('--api-key', 'ask_api_key', is_flag=True,
              help='also store your Mithril API key: asked without echo in a '
              'terminal, else read from stdin; checked with GET /v2/me and '
              'saved at mode 600 in ~/.config/mithril/config.yaml (ml setup\'s '
              'file; other profiles are kept). Keys come from Mithril\'s '
              'console.')
@click.option('--project', metavar='NAME_OR_FID',
              help='with --api-key: the project to use (default: the key\'s '
              'only project; in a terminal, a choice when it has several)')
@click.option('--profile', metavar='NAME',
              help='with --api-key: the profile to write (default: '
              f'${credentials.ENV_PROFILE}, else the current profile, else '
              f'{credentials.DEFAULT_PROFILE})')
@click.option('--api-url', metavar='URL',
              help=f'with --api-key: the Mithril API (default: '
              f'${credentials.ENV_API_URL}, else {client_lib.DEFAULT_API_URL}); '
              'plain http only to this machine, e.g. the emulator')
@click.option('--remote', is_flag=True,
              help='also list the plugin in ~/.sky/remote_plugins.yaml and '
              'point controller_wheel_path at a folder with our wheel '
              f'(default {setup_lib.DEFAULT_WHEEL_DIR}), for managed-jobs '
              'controllers on another cloud')
def setup_command(ask_api_key: bool, project: Optional[str],
                  profile: Optional[str], api_url: Optional[str],
                  remote: bool) -> int:
    """Enable the plugin for SkyPilot: list it in ~/.sky/plugins.yaml (other
    plugins are kept) and put the catalog where the `sky` client looks for
    Mithril's; with --api-key, store your Mithril API key too."""
    if not ask_api_key and (project or profile or api_url):
        raise CommandError('--project, --profile and --api-url go with '
                           '--api-key: add it to store a key.')
    if ask_api_key:
        store_api_key(profile or credentials.active_profile_name(),
                      api_url or os.environ.get(credentials.ENV_API_URL) or
                      client_lib.DEFAULT_API_URL, project)
    for in_remote in ([False, True] if remote else [False]):
        path = setup_lib.plugins_config_path(remote=in_remote)
        added = setup_lib.enable_plugin(path)
        verb = 'Added' if added else 'Already listed:'
        print(f'{verb} {setup_lib.PLUGIN_CLASS} in {path}')
    if remote:
        print(setup_lib.set_controller_wheel_path(
            setup_lib.plugins_config_path(remote=False)))
    catalog = setup_lib.publish_catalog(Path.home() / '.sky')
    print(f'Installed the Mithril catalog for the sky client at {catalog}')
    has_credentials = _has_credentials()
    if has_credentials:
        print(_add_live_market())
    print('Restart the SkyPilot API server so it loads the plugin: '
          '`sky api stop` (the next `sky` command starts it again).')
    if not has_credentials:
        print(f'No Mithril API key is set up yet. {KEY_SOURCE}; store it with '
              f'`{credentials.SETUP_COMMAND}`. ({ML_INSTALL}.)')
    print('Then check your Mithril access: `sky check mithril`.')
    return 0
