"""`sky-mithril instance create|list|info|delete|list-types`: bids on
Mithril's spot market, by hand, as `ml instance` does them.

Beyond `ml`: retries with backoff (the client), `--state` in any case and
with `ml`'s words (`running`, `pending`...), money printed once as `$8.00/h`,
bulk deletes that list what they cancel and leave SkyPilot's clusters alone,
and no prompt that blocks a script.
"""

import argparse
import fnmatch
import secrets
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence

from sky_mithril.account import connection
from sky_mithril import money
from sky_mithril.api import errors
from sky_mithril.api import models
from sky_mithril.api.models import BidState
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands import sky_clusters
from sky_mithril.commands.output import (CommandError, age, confirm, dollars,
                                         per_hour, print_json,
                                         print_table, progress, short_status)
from sky_mithril.provision import budget as budget_lib
from sky_mithril.provision import cluster_bid
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
        raise argparse.ArgumentTypeError(
            f'unknown state {word!r}; use one of {", ".join(STATE_WORDS)}')
    return state


def limit_price(text: str) -> Decimal:
    """`-m`: "8", "8.0" or "$8.00" per instance-hour; positive whole cents."""
    try:
        amount = money.parse_dollars(text)
    except money.MoneyFormatError as e:
        raise argparse.ArgumentTypeError(str(e)) from e
    if amount <= 0 or amount != amount.quantize(money.CENT):
        raise argparse.ArgumentTypeError(
            f'{text!r} must be above $0.00 and in whole cents, e.g. 8.00')
    return amount


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


def _type_names(conn: connection.Connection) -> Dict[str, str]:
    return {t.fid: t.name for t in conn.client.list_instance_types()}


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


def _cmd_create(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        instance_type = _resolve_type(conn, args.instance_type, args.region)
        cluster = None
        if args.k8s:
            cluster = common.find_cluster(conn, args.k8s)
            if cluster.status == models.KubernetesClusterState.TERMINATED:
                raise CommandError(f'Kubernetes cluster {cluster.name} is '
                                   'Terminated.')
        name = args.name or f'instance-{secrets.token_hex(4)}'
        if any(common.is_live(b)
               for b in conn.client.list_bids(conn.project_id, name=name)):
            raise CommandError(f'A live bid is already named {name!r}; choose '
                               'another with -n.')
        summary = (f'{args.num_instances} × {instance_type.name} in '
                   f'{args.region} at a limit of {per_hour(args.max_price)} '
                   f'per instance, named {name}'
                   + (f', joining Kubernetes cluster {cluster.name}'
                      if cluster else ''))
        # The user's max_hourly_spend (plugins.mithril in ~/.sky/config.yaml).
        budget = settings.resolve_spend_budget(
            *settings.sections_from_skypilot(None))
        standing = budget_lib.check(conn, budget, budget_lib.new_bid(
            name, args.num_instances, args.max_price))
        if standing is not None:
            progress(standing.note())
        if args.dry_run:
            if args.json:
                print_json({'dry_run': True, 'name': name,
                            'instance_type': instance_type.name,
                            'instance_type_fid': instance_type.fid,
                            'region': args.region,
                            'limit_price': dollars(args.max_price),
                            'instance_quantity': args.num_instances,
                            'kubernetes_cluster': cluster.fid if cluster else None})
            else:
                print(f'Dry run, nothing placed: would bid for {summary}.')
            return 0
        request = models.CreateBidRequest(
            project=conn.project_id, region=args.region,
            instance_type=instance_type.fid, limit_price=args.max_price,
            instance_quantity=args.num_instances, name=name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=keys.key_fids_for_new_bid(conn),
                kubernetes_cluster=cluster.fid if cluster else None))
        progress(f'Placing bid {name}...')
        bid = cluster_bid.create_once(conn, request, budget=budget).bid
        spot = _spot_price(conn, bid)
        progress(f'Placed bid {bid.fid} for {summary}. Spot price now: '
                 f'{per_hour(spot)}.')
        instances: List[models.Instance] = []
        if args.wait or args.watch:
            instances = common.wait_until_running(conn, bid)
            bid = conn.client.get_bid(bid.fid)
            progress(f'All {len(instances)} instance(s) are running: '
                     f'`sky-mithril ssh {bid.name}`.')
        else:
            progress(f'`sky-mithril instance info {bid.name}` shows its '
                     'progress.')
        if args.json:
            print_json(bid_detail_json(bid, {instance_type.fid:
                                             instance_type.name},
                                       instances, spot))
        else:
            print(bid.name)
        return 0
    finally:
        conn.client.close()


# list


def _cmd_list(args: argparse.Namespace) -> int:
    conn = common.connect()
    try:
        bids = conn.client.list_bids(conn.project_id, status=args.state,
                                     sort_by='created_at', sort_dir='desc')
        if not args.all and not args.state:
            bids = [b for b in bids if common.is_live(b)]
        bids = bids[:args.limit] if args.limit else bids
        names = _type_names(conn)
        if args.json:
            print_json([bid_json(b, names) for b in bids])
            return 0
        if not bids:
            print('No active bids. `sky-mithril instance list --all` includes '
                  'terminated ones.' if not args.all else 'No bids.')
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


def _cmd_info(args: argparse.Namespace) -> int:
    conn = common.connect()
    try:
        bid = common.choose_bid(conn, args.bid, 'BID')
        spot = _spot_price(conn, bid)
        detail = bid_detail_json(bid, _type_names(conn),
                                 common.bid_instances(conn, bid), spot)
        if args.json:
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
            conn.client.cancel_bid(bid.fid)
            status = conn.client.get_bid(bid.fid).status
        except errors.MithrilAPIError as e:
            progress(f'Could not cancel {bid.name} ({bid.fid}): {e}')
            failed += 1
            continue
        print(f'Cancelled {bid.name} ({bid.fid}): {status}')
        failed += status != BidState.TERMINATED
    return 1 if failed else 0


def _cmd_delete(args: argparse.Namespace) -> int:
    if args.bid and (args.all or args.name_pattern):
        raise CommandError('Give a BID, or --all, or -n PATTERN: one of them.')
    conn = common.connect()
    try:
        if args.all or args.name_pattern:
            return _delete_many(conn, args)
        bid = common.choose_bid(conn, args.bid, 'BID (or --all, or -n PATTERN)')
        if not common.is_live(bid):
            print(f'Bid {bid.name} ({bid.fid}) is already Terminated.')
            return 0
        if (not args.include_sky_clusters and
                bid.name in sky_clusters.skypilot_cluster_names()):
            raise CommandError(
                f'Bid {bid.name} backs the SkyPilot cluster {bid.name}: '
                f'`sky down {bid.name}` removes it properly. Pass '
                '--include-sky-clusters to cancel the bid anyway.')
        if not confirm(f'Cancel bid {bid.name} ({bid.fid}) and terminate its '
                       f'{bid.instance_quantity} instance(s)?', args.yes):
            return 1
        return _cancel(conn, [bid])
    finally:
        conn.client.close()


def _delete_many(conn: connection.Connection, args: argparse.Namespace) -> int:
    live = [b for b in conn.client.list_bids(conn.project_id)
            if common.is_live(b)]
    pattern = args.name_pattern or '*'
    matching = [b for b in live if fnmatch.fnmatchcase(b.name, pattern)]
    protected = (set() if args.include_sky_clusters else
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
    if not confirm(f'Cancel these {len(chosen)} bid(s)?', args.yes):
        return 1
    return _cancel(conn, chosen)


# list-types


def _cmd_list_types(args: argparse.Namespace) -> int:
    conn = common.connect()
    try:
        types = {t.fid: t for t in conn.client.list_instance_types()}
        auctions = [a for a in conn.client.list_spot_availability()
                    if a.instance_type in types and
                    (args.region is None or a.region == args.region)]
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
        if args.json:
            print_json(_types_json(rows))
            return 0
        if not rows:
            print(f'No spot auctions{" in " + args.region if args.region else ""}.')
            return 0
        headers = ['TYPE', 'GPUS', 'REGION', 'SPOT PRICE', 'CAPACITY']
        if args.verbose:
            headers += ['GPU MEM', 'CPUS', 'RAM', 'STORAGE', 'NETWORK']
        table = []
        for row in rows:
            kind: models.InstanceType = row['type']
            line = [kind.name, f'{kind.num_gpus}x {kind.gpu_type}',
                    row['region'], per_hour(row['spot_price']),
                    str(row['capacity'])]
            if args.verbose:
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


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`sky-mithril instance ...`."""
    instance = commands.add_parser(
        'instance', help='bids and instances on the spot market, by hand '
        '(as `ml instance`)')
    sub = instance.add_subparsers(dest='instance_command', required=True)

    create = sub.add_parser('create', help='place a spot bid')
    create.add_argument('-i', '--instance-type', required=True,
                        help='instance type name or fid, e.g. '
                        'h100-80gb.sxm.8x (see `instance list-types`)')
    create.add_argument('-r', '--region', required=True)
    create.add_argument('-m', '--max-price-per-hour', dest='max_price',
                        type=limit_price, required=True,
                        help='limit price per instance-hour: 8.0 or $8.00')
    create.add_argument('-n', '--name', help='bid name (default: generated)')
    create.add_argument('-N', '--num-instances', type=common.positive_int,
                        default=1, metavar='N',
                        help='instances in the bid, all or none (default 1)')
    create.add_argument('-p', '--project', help='project name or fid')
    create.add_argument('--k8s', metavar='CLUSTER',
                        help='join the instances to this Kubernetes cluster')
    create.add_argument('--wait', action='store_true',
                        help='wait until every instance runs')
    create.add_argument('-w', '--watch', action='store_true',
                        help='the same as --wait: each change is printed')
    create.add_argument('-d', '--dry-run', action='store_true',
                        help='check everything, place nothing')
    create.add_argument('--json', action='store_true')
    create.set_defaults(handler=_cmd_create)

    listing = sub.add_parser('list', help='bids (active ones by default)')
    listing.add_argument('--all', action='store_true',
                         help='include terminated bids')
    listing.add_argument('-s', '--state', type=bid_state,
                         help='one state, any case: open/pending, '
                         'allocated/running, preempting, paused, '
                         'terminated/cancelled')
    listing.add_argument('--limit', type=common.positive_int, metavar='N',
                         help='at most N bids, newest first')
    listing.add_argument('--json', action='store_true')
    listing.set_defaults(handler=_cmd_list)

    info = sub.add_parser('info', help='a bid, its instances and prices')
    info.add_argument('bid', nargs='?', metavar='BID', help='bid name or fid')
    info.add_argument('--json', action='store_true')
    info.set_defaults(handler=_cmd_info)

    delete = sub.add_parser('delete',
                            help='cancel bids and terminate their instances')
    delete.add_argument('bid', nargs='?', metavar='BID', help='bid name or fid')
    delete.add_argument('-y', '--yes', action='store_true',
                        help='do not ask for confirmation')
    delete.add_argument('--all', action='store_true',
                        help='every live bid (except SkyPilot clusters\')')
    delete.add_argument('-n', '--name-pattern', metavar='PATTERN',
                        help="live bids whose name matches, e.g. 'dev-*'")
    delete.add_argument('--include-sky-clusters', action='store_true',
                        help='also cancel bids that back SkyPilot clusters')
    delete.set_defaults(handler=_cmd_delete)

    types = sub.add_parser('list-types',
                           help='instance types with spot price and capacity')
    types.add_argument('-r', '--region')
    types.add_argument('-v', '--verbose', action='store_true',
                       help='also memory, CPUs, storage and network')
    types.add_argument('--json', action='store_true')
    types.set_defaults(handler=_cmd_list_types)
