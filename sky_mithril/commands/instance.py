"""`sky-mithril instance create|list|info|delete|list-types`: bids on
Mithril's spot market, by hand, as `ml instance` does them.

Beyond `ml`: retries with backoff (the client), `--state` in any case and
with `ml`'s words (`running`, `pending`...), money printed once as `$8.00/h`,
bulk deletes that list what they cancel and leave SkyPilot's clusters alone,
and no prompt that blocks a script.
"""

import fnmatch
import secrets
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence

import click

from sky_mithril.account import connection
from sky_mithril import money
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.api.models import BidState
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands import options
from sky_mithril.commands import sky_clusters
from sky_mithril.commands.output import (CommandError, age, confirm, dollars,
                                         per_hour, print_json,
                                         print_table, progress, short_status)
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import cluster_bid
from sky_mithril.provision import project_snapshot
from sky_mithril.task import settings

# `--state` words: Mithril's bid states and `ml`'s names for them.
STATE_WORDS = {
    'open': BidState.OPEN,
    'pending': BidState.OPEN,
    'allocated': BidState.ALLOCATED,
    'running': BidState.ALLOCATED,
    'preempting': BidState.PREEMPTING,
    'paused': BidState.PAUSED,
    'terminated': BidState.TERMINATED,
    'cancelled': BidState.TERMINATED,
    'completed': BidState.TERMINATED,
}


def bid_state(word: str) -> str:
    """A `--state` value, in any case, as the API's bid status."""
    state = STATE_WORDS.get(word.strip().lower())
    if state is None:
        raise click.BadParameter(
            f'unknown state {word!r}; use one of {", ".join(STATE_WORDS)}')
    return state


def _looks_shell_eaten(text: str) -> bool:
    """Whether `text` is what the shell leaves of an unquoted `$20.00`: it
    expands `$2` (a positional parameter, empty) and keeps the rest, so
    `$20.00` arrives as "0.00", `$8.50` as ".50", and `$8` as nothing, when
    -m takes the next option (`-n`) as its value."""
    return not text or text.startswith(('.', '0', '-'))


def limit_price(text: str) -> Decimal:
    """`-m`: "8", "8.0" or "$8.00" per instance-hour; positive whole cents,
    at most the ceiling a task's limit_price has."""
    try:
        amount = money.parse_dollars(text)
        if amount <= 0 or amount != amount.quantize(money.CENT):
            raise money.MoneyFormatError(
                f'{text!r} must be above $0.00 and in whole cents, e.g. 8.00')
    except money.MoneyFormatError as e:
        hint = (" If you typed $ unquoted, the shell replaced it and the digit "
                "after it: quote the price ('$20.00') or drop the $ (20.00)."
                if _looks_shell_eaten(text) else '')
        raise click.BadParameter(f'{e}.{hint}' if hint else str(e)) from e
    try:
        settings.check_ceiling(amount, '-m')
    except settings.MithrilConfigError as e:
        raise click.BadParameter(str(e)) from e
    if _looks_shell_eaten(text):
        progress(f'Note: -m {text} is what the shell leaves of an unquoted '
                 f'$N{text} (it replaces $N); if that is what you typed, quote '
                 f"the price ('$8{text}') or drop the $.")
    return amount


LIMIT_PRICE = options.Parsed('PRICE', limit_price)


@click.group('instance', cls=options.Group,
             short_help='Spot bids by hand (as `ml instance`).')
def group() -> None:
    """Bids and instances on the spot market, by hand (as `ml instance`)."""


# JSON shapes (documented in docs/ml-commands.md, "JSON output").


def bid_json(bid: models.Bid, type_names: Dict[str, str]) -> Dict[str, Any]:
    """One bid as `instance list --json` prints it (BidModel's fields, the
    type's name beside its fid)."""
    return {
        'fid': bid.fid,
        'name': bid.name,
        'project': bid.project,
        'status': bid.status,
        'instance_type': type_names.get(bid.instance_type, bid.instance_type),
        'instance_type_fid': bid.instance_type,
        'region': bid.region,
        'limit_price': dollars(bid.limit_price),
        'instance_quantity': bid.instance_quantity,
        'instances': list(bid.instances),
        'kubernetes_cluster': bid.launch_specification.kubernetes_cluster,
        'created_at': bid.created_at.isoformat(),
        'deactivated_at': (bid.deactivated_at.isoformat()
                           if bid.deactivated_at else None),
    }


def node_json(instance: models.Instance) -> Dict[str, Any]:
    """One instance of a bid, with how to reach it."""
    extra = instance.model_extra or {}
    return {
        'fid': instance.fid,
        'name': instance.name,
        'status': instance.status,
        'ssh_destination': instance.ssh_destination,
        'ssh_port': int(extra.get('ssh_port') or 22),
        'ssh_user': str(extra.get('ssh_user') or 'ubuntu'),
        'private_ip': instance.private_ip,
    }


def bid_detail_json(bid: models.Bid, type_names: Dict[str, str],
                    instances: List[models.Instance],
                    spot_price: Optional[Decimal]) -> Dict[str, Any]:
    """`instance info --json` (and `create --json`): the bid, its nodes in
    `--node` order, and the spot price now."""
    return {**bid_json(bid, type_names),
            'spot_price': dollars(spot_price),
            'nodes': [node_json(i) for i in instances]}


def _spot_price(conn: connection.Connection,
                bid: models.Bid) -> Optional[Decimal]:
    try:
        return conn.client.get_current_price(bid.instance_type,
                                             region=bid.region).spot_price
    except errors.NotFoundError:
        return None


# create


def _resolve_type(conn: connection.Connection, wanted: str,
                  region: str) -> models.InstanceType:
    """The instance type named (or fid) `wanted` that has an auction in `region`."""
    types = conn.client.list_instance_types()
    auctions = conn.client.list_spot_availability()
    in_region = {a.instance_type for a in auctions if a.region == region}
    if not in_region:
        regions = sorted({a.region for a in auctions})
        raise CommandError(f'No spot auctions in region {region!r}; regions: '
                           f'{", ".join(regions)}.')
    named = [t for t in types
             if wanted in (t.fid, t.name) or t.name.lower() == wanted.lower()]
    for instance_type in named:
        if instance_type.fid in in_region:
            return instance_type
    offered = sorted({t.name for t in types if t.fid in in_region})
    where = 'is not offered in' if named else 'is not an instance type in'
    raise CommandError(f'{wanted!r} {where} {region}; there: '
                       f'{", ".join(offered)}. See `sky-mithril instance '
                       'list-types`.')


def _market_line(conn: connection.Connection,
                 instance_type: models.InstanceType, region: str,
                 num_instances: int, limit: Decimal) -> Optional[str]:
    """What a launch says before its bid: the spot price now against the
    limit, and whether the bid will wait (for the price, or for capacity).
    Refuses more instances than the auction has at all: a bid is all or
    none, so it could never be allocated."""
    try:
        quote = conn.client.get_current_price(instance_type.fid, region=region)
    except errors.NotFoundError:
        return None
    total = quote.total_capacity
    if total is not None and num_instances > total:
        raise CommandError(
            f'-N {num_instances}: the {instance_type.name} auction in {region} '
            f'has {total} instance(s) in all, and a bid gets all of its '
            f'instances or none, so it could never be allocated. Ask for at '
            f'most {total}, or place several bids.')
    spot = quote.spot_price
    if spot is None:
        return None
    now = f'Spot price in {region} now: {per_hour(spot)}'
    if spot > limit:
        return (f'{now}, above your limit {per_hour(limit)}: the bid will wait '
                f'for the price to fall. To be allocated now, use -m '
                f'{spot:.2f} or more.')
    free = quote.available_capacity
    if free is not None and free < num_instances:
        return (f'{now}, within your limit, but only {free} instance(s) free '
                f'for {num_instances}: the bid will wait for capacity.')
    return f'{now}{"" if free is None else f" ({free} free)"}, within your limit.'


@group.command('create', short_help='Place a spot bid.', epilog=options.examples(
    'sky-mithril instance create -i a100-80gb.sxm.1x -r us-central3-a -m 8.00',
    'sky-mithril instance create -i h100-80gb.sxm.8x -r us-central1-a -m 30 -N 2 -n train --wait',
    "sky-mithril instance create -i a100-80gb.sxm.1x -r us-central3-a -m '$8.00' --dry-run"))
@click.option('-i', '--instance-type', 'type_name', required=True,
              help='instance type name or fid, e.g. h100-80gb.sxm.8x '
              '(`sky-mithril instance list-types` lists them). `ml`\'s letter: '
              'in `sky launch`, -i is the autostop idle time')
@click.option('-r', '--region', required=True,
              help='a Mithril region, e.g. us-central3-a. `ml`\'s letter: in '
              '`sky launch`, -r is --retry-until-up')
@click.option('-m', '--max-price-per-hour', 'max_price', type=LIMIT_PRICE,
              required=True,
              help='limit price per instance-hour: 8, 8.00, or \'$8.00\' in '
              'quotes (unquoted, the shell eats $8)')
@click.option('-n', '--name',
              help='the bid\'s name (default: generated). `ml`\'s letter: in '
              '`sky launch`, -n names the task')
@click.option('-N', '--num-instances', type=options.POSITIVE_INT, default=1,
              metavar='N', help='instances in the bid, all or none (default 1)')
@click.option('-p', '--project',
              help='project name or fid (default: the configured project)')
@click.option('--k8s', metavar='CLUSTER',
              help='join the instances to this Kubernetes cluster')
@click.option('--wait', is_flag=True, help='wait until every instance runs')
@click.option('-w', '--watch', is_flag=True,
              help='the same as --wait: each change is printed')
@click.option('-d', '--dry-run', is_flag=True,
              help='check everything a bid needs (type, region, capacity, '
              'limit, SSH key, budget) and show the spot price against the '
              'limit; place nothing. `ml`\'s letter: in `sky launch`, -d is '
              '--detach-run')
@options.json_option('the bid and its nodes')
def create_bid(type_name: str, region: str, max_price: Decimal,
               name: Optional[str], num_instances: int, project: Optional[str],
               k8s: Optional[str], wait: bool, watch: bool, dry_run: bool,
               as_json: bool) -> int:
    """Place a spot bid: N instances of a type in a region, at most a limit
    price per instance-hour each.

    Prints the bid's name; progress goes to stderr.
    """
    conn = common.connect(project)
    try:
        instance_type = _resolve_type(conn, type_name, region)
        cluster = None
        if k8s:
            cluster = common.find_cluster(conn, k8s)
            if cluster.status == models.KubernetesClusterState.TERMINATED:
                raise CommandError(f'Kubernetes cluster {cluster.name} is '
                                   'Terminated.')
        name = name or f'instance-{secrets.token_hex(4)}'
        if any(common.is_live(b)
               for b in conn.client.list_bids(conn.project_id, name=name)):
            raise CommandError(f'A live bid is already named {name!r}; choose '
                               'another with -n.')
        keys.require_local_key_pairs()
        market = _market_line(conn, instance_type, region, num_instances,
                              max_price)
        summary = (f'{num_instances} × {instance_type.name} in '
                   f'{region} at a limit of {per_hour(max_price)} '
                   f'per instance, named {name}'
                   + (f', joining Kubernetes cluster {cluster.name}'
                      if cluster else ''))
        # The user's max_hourly_spend (plugins.mithril in ~/.sky/config.yaml).
        budget = settings.resolve_spend_budget(
            *settings.sections_from_skypilot(None))
        standing = budget_lib.check(conn, budget, budget_lib.new_bid(
            name, num_instances, max_price))
        if standing is not None:
            progress(standing.note())
        if market:
            progress(market)
        if dry_run:
            if as_json:
                print_json({'dry_run': True, 'name': name,
                            'instance_type': instance_type.name,
                            'instance_type_fid': instance_type.fid,
                            'region': region,
                            'limit_price': dollars(max_price),
                            'instance_quantity': num_instances,
                            'kubernetes_cluster': cluster.fid if cluster else None})
            else:
                print(f'Dry run, nothing placed: would bid for {summary}.')
            return 0
        request = models.CreateBidRequest(
            project=conn.project_id, region=region,
            instance_type=instance_type.fid, limit_price=max_price,
            instance_quantity=num_instances, name=name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=keys.key_fids_for_new_bid(conn),
                kubernetes_cluster=cluster.fid if cluster else None))
        progress(f'Placing bid {name}...')
        bid = cluster_bid.create_once(conn, request, budget=budget).bid
        spot = _spot_price(conn, bid)
        progress(f'Placed bid {bid.fid} for {summary}. Spot price now: '
                 f'{per_hour(spot)}.')
        instances: List[models.Instance] = []
        if wait or watch:
            instances = common.wait_until_running(conn, bid)
            bid = conn.client.get_bid(bid.fid)
            progress(f'All {len(instances)} instance(s) are running: '
                     f'`sky-mithril ssh {bid.name}`.')
        else:
            progress(f'`sky-mithril instance info {bid.name}` shows its '
                     'progress.')
        if as_json:
            print_json(bid_detail_json(bid, {instance_type.fid:
                                             instance_type.name},
                                       instances, spot))
        else:
            print(bid.name)
        return 0
    finally:
        conn.client.close()


# list


@group.command('list', short_help="The project's bids, newest first.",
               epilog=options.examples(
    'sky-mithril instance list',
    'sky-mithril instance list --all --limit 10',
    'sky-mithril instance list -s pending --json'))
@click.option('--all', 'include_terminated', is_flag=True,
              help='include terminated bids')
@click.option('-s', '--state', type=options.Parsed('STATE', bid_state),
              help='only bids in this state, any case: open/pending, '
              'allocated/running, preempting, paused, terminated/cancelled')
@click.option('--limit', type=options.POSITIVE_INT, metavar='N',
              help='at most N bids, newest first')
@options.json_option('the bids')
def list_bids(include_terminated: bool, state: Optional[str],
              limit: Optional[int], as_json: bool) -> int:
    """The project's bids, newest first: live ones unless --all or -s."""
    conn = common.connect()
    try:
        bids = conn.client.list_bids(conn.project_id, status=state,
                                     sort_by='created_at', sort_dir='desc')
        if not include_terminated and not state:
            bids = [b for b in bids if common.is_live(b)]
        bids = bids[:limit] if limit else bids
        names = common.type_names(conn)
        if as_json:
            print_json([bid_json(b, names) for b in bids])
            return 0
        if not bids:
            print('No active bids. `sky-mithril instance list --all` includes '
                  'terminated ones.' if not include_terminated else 'No bids.')
            return 0
        running: Dict[str, int] = {}
        for instance in conn.client.list_instances(
                conn.project_id, status_in=[models.InstanceState.RUNNING]):
            running[instance.bid or ''] = running.get(instance.bid or '', 0) + 1
        print_table(
            ('NAME', 'STATUS', 'TYPE', 'REGION', 'RUNNING', 'LIMIT', 'AGE',
             'FID'),
            [(b.name, b.status, names.get(b.instance_type, b.instance_type),
              b.region or '-', f'{running.get(b.fid, 0)}/{b.instance_quantity}',
              per_hour(b.limit_price), age(b.created_at), b.fid)
             for b in bids])
        return 0
    finally:
        conn.client.close()


# info


def _ssh_text(node: Dict[str, Any]) -> str:
    if not node['ssh_destination']:
        return '-'
    port = f' -p {node["ssh_port"]}' if node['ssh_port'] != 22 else ''
    return f'{node["ssh_user"]}@{node["ssh_destination"]}{port}'


@group.command('info', epilog=options.examples(
    'sky-mithril instance info train',
    'sky-mithril instance info bid_abc123 --json'))
@click.argument('bid_name_or_fid', required=False, metavar='[BID]')
@options.json_option('the bid, its nodes and the spot price')
def show_bid(bid_name_or_fid: Optional[str], as_json: bool) -> int:
    """A bid, its instances (with how to reach them) and its prices. BID is
    a bid's name or fid; on a terminal, leave it out to pick one."""
    conn = common.connect()
    try:
        bid = common.choose_bid(conn, bid_name_or_fid, 'BID')
        spot = _spot_price(conn, bid)
        detail = bid_detail_json(bid, common.type_names(conn),
                                 common.bid_instances(conn, bid), spot)
        if as_json:
            print_json(detail)
            return 0
        fields = [
            ('Bid', f'{bid.name} ({bid.fid})'),
            ('Status', bid.status),
            ('Instance type', detail['instance_type']),
            ('Region', bid.region or '-'),
            ('Instances', str(bid.instance_quantity)),
            ('Limit price', per_hour(bid.limit_price)),
            ('Spot price now', per_hour(spot)),
            ('Created', f'{bid.created_at:%Y-%m-%d %H:%M:%S %Z} '
                        f'({age(bid.created_at)} ago)'),
        ]
        if detail['kubernetes_cluster']:
            fields.append(('Kubernetes cluster', detail['kubernetes_cluster']))
        for label, value in fields:
            print(f'{label + ":":<20}{value}')
        if detail['nodes']:
            print()
            print_table(('NODE', 'NAME', 'STATUS', 'SSH', 'PRIVATE IP', 'FID'),
                        [(str(index), n['name'], short_status(n['status']),
                          _ssh_text(n), n['private_ip'] or '-', n['fid'])
                         for index, n in enumerate(detail['nodes'])])
        return 0
    finally:
        conn.client.close()


# delete


def _cancel(conn: connection.Connection, bids: Sequence[models.Bid]) -> int:
    """Cancels each bid and reads it back; 1 if any is not Terminated."""
    failed = 0
    for bid in bids:
        try:
            with project_snapshot.changing(conn):
                conn.client.cancel_bid(bid.fid)
            status = conn.client.get_bid(bid.fid).status
        except errors.MithrilAPIError as e:
            progress(f'Could not cancel {bid.name} ({bid.fid}): {e}')
            failed += 1
            continue
        print(f'Cancelled {bid.name} ({bid.fid}): {status}')
        failed += status != BidState.TERMINATED
    return 1 if failed else 0


@group.command('delete', short_help='Cancel bids, ending their instances.',
               epilog=options.examples(
    'sky-mithril instance delete train',
    "sky-mithril instance delete -n 'dev-*' -y",
    'sky-mithril instance delete --all'))
@click.argument('bid_name_or_fid', required=False, metavar='[BID]')
@options.YES
@click.option('--all', 'every_bid', is_flag=True,
              help='every live bid (except those of SkyPilot clusters)')
@click.option('-n', '--name-pattern', metavar='PATTERN',
              help="live bids whose name matches a glob, e.g. 'dev-*'. `ml`'s "
              'letter: in `sky launch`, -n names the task')
@click.option('--include-sky-clusters', is_flag=True,
              help='also cancel bids that back SkyPilot clusters (`sky down` '
              'is the proper way)')
def delete_bids(bid_name_or_fid: Optional[str], yes: bool, every_bid: bool,
                name_pattern: Optional[str],
                include_sky_clusters: bool) -> int:
    """Cancel bids and terminate their instances: one BID (name or fid), or
    --all, or those matching -n PATTERN. Lists what it cancels and asks first
    (-y does not ask)."""
    if bid_name_or_fid and (every_bid or name_pattern):
        raise CommandError('Give a BID, or --all, or -n PATTERN: one of them.')
    conn = common.connect()
    try:
        if every_bid or name_pattern:
            return _delete_many(conn, name_pattern or '*', include_sky_clusters,
                                yes)
        bid = common.choose_bid(conn, bid_name_or_fid, 'BID (or --all, or -n PATTERN)')
        if not common.is_live(bid):
            print(f'Bid {bid.name} ({bid.fid}) is already Terminated.')
            return 0
        if (not include_sky_clusters and
                bid.name in sky_clusters.skypilot_cluster_names()):
            raise CommandError(
                f'Bid {bid.name} backs the SkyPilot cluster {bid.name}: '
                f'`sky down {bid.name}` removes it properly. Pass '
                '--include-sky-clusters to cancel the bid anyway.')
        if not confirm(f'Cancel bid {bid.name} ({bid.fid}) and terminate its '
                       f'{bid.instance_quantity} instance(s)?', yes):
            return 1
        return _cancel(conn, [bid])
    finally:
        conn.client.close()


def _delete_many(conn: connection.Connection, pattern: str,
                 include_sky_clusters: bool, yes: bool) -> int:
    live = [b for b in conn.client.list_bids(conn.project_id)
            if common.is_live(b)]
    matching = [b for b in live if fnmatch.fnmatchcase(b.name, pattern)]
    protected = (set() if include_sky_clusters else
                 sky_clusters.skypilot_cluster_names())
    skipped = [b for b in matching if b.name in protected]
    chosen = [b for b in matching if b.name not in protected]
    if skipped:
        print(f'Leaving {len(skipped)} bid(s) that back SkyPilot clusters '
              '(`sky down CLUSTER` removes them; --include-sky-clusters '
              'cancels them too):')
        for bid in skipped:
            print(f'  {bid.name} ({bid.fid}, {bid.status})')
    if not chosen:
        print(f'No live bid to cancel matches {pattern!r}.')
        return 0
    print(f'Will cancel {len(chosen)} bid(s):')
    for bid in chosen:
        print(f'  {bid.name} ({bid.fid}, {bid.status}, '
              f'{bid.instance_quantity} instance(s), limit '
              f'{per_hour(bid.limit_price)})')
    if not confirm(f'Cancel these {len(chosen)} bid(s)?', yes):
        return 1
    return _cancel(conn, chosen)


# list-types


@group.command('list-types',
               short_help='Instance types: spot price and capacity.',
               epilog=options.examples(
    'sky-mithril instance list-types',
    'sky-mithril instance list-types -r us-central3-a -v',
    'sky-mithril instance list-types --json'))
@click.option('-r', '--region',
              help='only this region\'s auctions. In `sky status`, -r is '
              '--refresh')
@click.option('-v', '--verbose', is_flag=True,
              help='also GPU memory, CPUs, RAM, storage and network')
@options.json_option('the types, each with its regions')
def list_types(region: Optional[str], verbose: bool, as_json: bool) -> int:
    """Instance types with spot auctions: spot price and capacity now, per
    region."""
    conn = common.connect()
    try:
        types = {t.fid: t for t in conn.client.list_instance_types()}
        listed = conn.client.list_spot_availability()
        if region:
            common.check_region(region, listed)
        auctions = [a for a in listed if a.instance_type in types and
                    (region is None or a.region == region)]
        rows: List[Dict[str, Any]] = []
        for auction in sorted(auctions, key=lambda a: (
                types[a.instance_type].name, a.region)):
            quote = conn.client.get_current_price(auction.instance_type,
                                                  region=auction.region)
            rows.append({
                'type': types[auction.instance_type],
                'region': auction.region,
                'spot_price': quote.spot_price or auction.last_instance_price,
                'capacity': (quote.available_capacity
                             if quote.available_capacity is not None else
                             auction.capacity),
            })
        if as_json:
            print_json(_types_json(rows))
            return 0
        if not rows:
            print(f'No spot auctions{" in " + region if region else ""}.')
            return 0
        headers = ['TYPE', 'GPUS', 'REGION', 'SPOT PRICE', 'CAPACITY']
        if verbose:
            headers += ['GPU MEM', 'CPUS', 'RAM', 'STORAGE', 'NETWORK']
        table = []
        for row in rows:
            kind: models.InstanceType = row['type']
            line = [kind.name, f'{kind.num_gpus}x {kind.gpu_type}',
                    row['region'], per_hour(row['spot_price']),
                    str(row['capacity'])]
            if verbose:
                line += [f'{kind.gpu_memory_gb} GB', str(kind.num_cpus),
                         f'{kind.ram_gb} GB', f'{kind.local_storage_gb} GB',
                         kind.network_type or '-']
            table.append(line)
        print_table(headers, table)
        return 0
    finally:
        conn.client.close()


def _types_json(rows: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """One entry per instance type (InstanceTypeModel's fields) with its regions."""
    by_type: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        kind: models.InstanceType = row['type']
        entry = by_type.setdefault(kind.fid, {
            'fid': kind.fid, 'name': kind.name, 'num_gpus': kind.num_gpus,
            'gpu_type': kind.gpu_type, 'gpu_memory_gb': kind.gpu_memory_gb,
            'num_cpus': kind.num_cpus, 'ram_gb': kind.ram_gb,
            'local_storage_gb': kind.local_storage_gb,
            'network_type': kind.network_type, 'regions': []})
        entry['regions'].append({'region': row['region'],
                                 'spot_price': dollars(row['spot_price']),
                                 'capacity': row['capacity']})
    return list(by_type.values())
