"""`sky-mithril reservations quote|create|list|info|extend|pause|resume|return`:
Mithril's reserved capacity. Money moves at `create` (the whole price, now)
and at `return` (instances deleted for good, for a credit), so both show the
numbers first and ask for confirmation (`-y` skips it)."""

import datetime
from decimal import Decimal
from typing import Any, Callable, Dict, List, Optional, Tuple

import click

from sky_mithril import money
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands import options
from sky_mithril.commands.output import (CommandError, confirm, dollars, per_hour,
                                         print_json, print_table, progress)
from sky_mithril.provision import project_snapshot

# Mithril sells windows of whole hours, from 3 hours to 2 weeks.
MIN_HOURS = 3
MAX_HOURS = 336


def hours(text: str) -> int:
    """`--hours`: whole hours from MIN_HOURS to MAX_HOURS."""
    if not text.strip().isdigit() or not MIN_HOURS <= int(text) <= MAX_HOURS:
        raise click.BadParameter(
            f'{text!r} is not a reservation length: give whole hours from '
            f'{MIN_HOURS} to {MAX_HOURS} (2 weeks), e.g. --hours 24')
    return int(text)


def start_time(text: str) -> Optional[datetime.datetime]:
    """`--start`: `now` (None: Mithril's clock decides) or an ISO 8601 time
    (UTC unless it says otherwise)."""
    if text.strip().lower() == 'now':
        return None
    try:
        when = datetime.datetime.fromisoformat(text.strip().replace('Z', '+00:00'))
    except ValueError:
        raise click.BadParameter(
            f'{text!r} is not a start time: give `now` or an ISO 8601 time '
            'such as 2030-01-31T09:00 (UTC)') from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _price(text: str) -> Decimal:
    """`--max-unit-price`: dollars per instance-hour."""
    try:
        return money.parse_dollars(text)
    except (ValueError, ArithmeticError):
        raise click.BadParameter(
            f'{text!r} is not a price per instance-hour, e.g. 2.50') from None


@click.group('reservations', cls=options.Group,
             short_help="Mithril's reserved capacity: quote, buy, use.")
def group() -> None:
    """Mithril's reserved capacity: quote, buy, use, pause, extend, return.
    `create` charges the whole price now and `return` deletes instances for
    good, so both show the numbers first and ask (-y does not)."""


PROJECT = click.option('--project', help='project name or fid (default: '
                       "your profile's)")
RESERVATION = click.argument('reservation_name_or_fid', metavar='RESERVATION')


def _window_options(command: Callable[..., int]) -> Callable[..., int]:
    """TYPE, -r/--region, --hours, --start and -N: the window a quote or a
    purchase is for."""
    for decorator in reversed([
            click.argument('type_name', metavar='TYPE'),
            click.option('-r', '--region', required=True,
                         help='a Mithril region, e.g. us-central3-a'),
            click.option('--hours', 'length_hours',
                         type=options.Parsed('HOURS', hours), required=True,
                         help=f'length, whole hours {MIN_HOURS}-{MAX_HOURS}'),
            click.option('--start', type=options.Parsed('TIME', start_time),
                         help='`now` (default) or an ISO 8601 time, UTC'),
            click.option('-N', '--num-instances',
                         type=options.POSITIVE_INT, default=1,
                         help='instances (default 1)')]):
        command = decorator(command)
    return command


def _window(conn: connection.Connection, start: Optional[datetime.datetime],
            length_hours: int) -> Tuple[datetime.datetime, datetime.datetime]:
    begin = start or conn.client.server_now().replace(microsecond=0)
    return begin, begin + datetime.timedelta(hours=length_hours)


def _reservable_type(conn: connection.Connection, wanted: str,
                     region: str) -> models.InstanceType:
    """The reservable instance type named (or fid) `wanted`, offered in `region`."""
    regions = sorted({a.region for a in conn.client.list_spot_availability()})
    if region not in regions:
        raise CommandError(f'No region {region!r}; regions: {", ".join(regions)}.')
    types = conn.client.list_reservation_instance_types()
    for instance_type in types:
        if wanted in (instance_type.fid, instance_type.name) or (
                instance_type.name.lower() == wanted.lower()):
            return instance_type
    raise CommandError(f'{wanted!r} cannot be reserved; reservable types: '
                       f'{", ".join(sorted({t.name for t in types}))}.')


def find_reservation(conn: connection.Connection,
                     name_or_fid: str) -> models.Reservation:
    """The reservation with that fid or name (the newest of that name)."""
    named = [r for r in conn.client.list_reservations(conn.project_id)
             if name_or_fid in (r.fid, r.name)]
    if not named:
        raise CommandError(f'No reservation {name_or_fid!r} in project '
                           f'{conn.project_id}. `sky-mithril reservations list` '
                           'lists them.')
    return max(named, key=lambda r: r.created_at)


def _joinable_cluster(conn: connection.Connection, name_or_fid: str,
                      region: str) -> models.KubernetesCluster:
    """The live Kubernetes cluster named (or fid) `name_or_fid` in `region`:
    a reservation's instances join only a cluster of their own region."""
    live = [c for c in conn.client.list_kubernetes_clusters(conn.project_id)
            if name_or_fid in (c.fid, c.name) and
            c.status != models.KubernetesClusterState.TERMINATED]
    if not live:
        raise CommandError(f'No live Kubernetes cluster {name_or_fid!r} in '
                           f'project {conn.project_id}; `sky-mithril k8s '
                           'list` lists them.')
    in_region = [c for c in live if c.region == region]
    if not in_region:
        raise CommandError(
            f'Kubernetes cluster {name_or_fid!r} is in '
            f'{", ".join(sorted({c.region for c in live}))}, not {region}: '
            "a reservation's instances join a cluster of their own region. "
            '`sky-mithril k8s list` shows each cluster\'s region.')
    return in_region[-1]


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')


def _offer_lines(offer: models.ReservationOffer) -> List[str]:
    return [
        f'  unit price     {per_hour(offer.unit_price)} per instance '
        '(the whole window, whether used or not)',
        f'  charged now    {dollars(offer.total_price)}, in full, at create',
        f'  pause credit   {per_hour(offer.pause_buyback_price)} per instance '
        'paused at least an hour',
        f'  return credit  {per_hour(offer.return_buyback_price)} per returned '
        'instance, for each hour left',
    ]


def _offer_json(offer: models.ReservationOffer) -> Dict[str, Any]:
    return {'offer': offer.key, 'unit_price': dollars(offer.unit_price),
            'total_price': dollars(offer.total_price),
            'pause_credit_per_hour': dollars(offer.pause_buyback_price),
            'return_credit_per_hour': dollars(offer.return_buyback_price)}


def _standard_offer(quote: models.ReservationQuote) -> models.ReservationOffer:
    for offer in quote.offers:
        if offer.key == 'standard':
            return offer
    if not quote.offers:
        raise CommandError('Mithril offered no price for that window; '
                           '`sky-mithril reservations quote` with another '
                           'start, length or quantity may find one.')
    return quote.offers[0]


def reservation_json(reservation: models.Reservation,
                     type_names: Dict[str, str]) -> Dict[str, Any]:
    """The `--json` shape of one reservation."""
    return {'fid': reservation.fid, 'name': reservation.name,
            'status': reservation.status,
            'instance_type': type_names.get(reservation.instance_type,
                                            reservation.instance_type),
            'region': reservation.region,
            'instance_quantity': reservation.instance_quantity,
            'instances': reservation.instances,
            'start_time': reservation.start_time.isoformat(),
            'end_time': reservation.end_time.isoformat(),
            'unit_price': dollars(reservation.unit_price),
            'total_price': dollars(reservation.total_price)}


@group.command('quote', short_help='Price a reservation (buys nothing).',
               epilog=options.examples(
                   'sky-mithril reservations quote a100-80gb.sxm.8x -r us-central3-a --hours 24',
                   'sky-mithril reservations quote h100-80gb.sxm.8x -r us-central1-a --hours 72 '
                   '-N 2 --start 2030-01-31T09:00'))
@_window_options
@PROJECT
@options.json_option('the offers')
def quote_reservation(type_name: str, region: str, length_hours: int,
                      start: Optional[datetime.datetime], num_instances: int,
                      project: Optional[str], as_json: bool) -> int:
    """Price a reservation of N instances of TYPE for a window; buys
    nothing."""
    conn = common.connect(project)
    try:
        instance_type = _reservable_type(conn, type_name, region)
        begin, end = _window(conn, start, length_hours)
        quote = conn.client.quote_reservation(conn.project_id, instance_type.fid,
                                              region, begin, end,
                                              num_instances)
        if as_json:
            print_json([_offer_json(offer) for offer in quote.offers])
            return 0
        print(f'{num_instances} × {instance_type.name} in {region}, '
              f'{_when(begin)} → {_when(end)} ({length_hours} h):')
        for offer in quote.offers:
            if len(quote.offers) > 1:
                print(f' {offer.display_name} ({offer.key}):')
            print('\n'.join(_offer_lines(offer)))
        return 0
    finally:
        conn.client.close()


@group.command('create', short_help='Buy a reservation (charged now, in full).',
               epilog=options.examples(
                   'sky-mithril reservations create train a100-80gb.sxm.8x -r us-central3-a '
                   '--hours 24',
                   'sky-mithril reservations create train a100-80gb.sxm.8x -r us-central3-a '
                   '--hours 24 --max-unit-price 2.50 -y'))
@click.argument('name', metavar='NAME')
@_window_options
@click.option('--max-unit-price', type=options.Parsed('PRICE', _price),
              help='refuse if the unit price is above this ($/instance-hour)')
@click.option('--k8s', metavar='CLUSTER',
              help='join the instances to this Kubernetes cluster (name or '
              'fid; same region)')
@options.YES
@PROJECT
@options.json_option('the reservation')
def create_reservation(name: str, type_name: str, region: str,
                       length_hours: int, start: Optional[datetime.datetime],
                       num_instances: int, max_unit_price: Optional[Decimal],
                       k8s: Optional[str], yes: bool, project: Optional[str],
                       as_json: bool) -> int:
    """Buy a reservation named NAME: the whole price is charged now. Shows
    the offer and the SSH keys its instances boot with (SkyPilot's and your
    registered local ones), and asks first (-y does not ask)."""
    conn = common.connect(project)
    try:
        instance_type = _reservable_type(conn, type_name, region)
        cluster = _joinable_cluster(conn, k8s, region) if k8s else None
        begin, end = _window(conn, start, length_hours)
        offer = _standard_offer(conn.client.quote_reservation(
            conn.project_id, instance_type.fid, region, begin, end,
            num_instances))
        if max_unit_price is not None and offer.unit_price > max_unit_price:
            raise CommandError(
                f'The unit price is {per_hour(offer.unit_price)}, above your '
                f'--max-unit-price {per_hour(max_unit_price)}; nothing '
                'was bought.')
        progress(f'Reservation {name}: {num_instances} × '
                 f'{instance_type.name} in {region}, {_when(begin)} → '
                 f'{_when(end)} ({length_hours} h)')
        progress('\n'.join(_offer_lines(offer)))
        ssh_keys = keys.keys_for_new_reservation(conn)
        progress(f'  SSH keys       {", ".join(k.name for k in ssh_keys)} '
                 "(SkyPilot's first; fixed at create)")
        if cluster is not None:
            progress(f'  Kubernetes     the instances join cluster '
                     f'{cluster.name} ({cluster.fid})')
        if not confirm(f'Buy it for {dollars(offer.total_price)}, charged now?',
                       yes):
            progress('Nothing was bought.')
            return 1
        # The guard Mithril applies if its price moved since the quote.
        ceiling = max_unit_price or offer.unit_price
        request = models.CreateReservationRequest(
            project=conn.project_id, instance_type=instance_type.fid,
            region=region, start_time=begin, end_time=end,
            instance_quantity=num_instances, name=name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=[k.fid for k in ssh_keys],
                kubernetes_cluster=cluster.fid if cluster else None),
            price_specification=models.PriceSpecification(
                offer_key=offer.key, max_unit_price=money.dollars_to_cents(ceiling)))
        with project_snapshot.changing(conn):
            reservation = conn.client.create_reservation(request)
        progress(f'Bought {reservation.fid} for {dollars(reservation.total_price)}.')
        if as_json:
            print_json(reservation_json(reservation, {instance_type.fid:
                                                      instance_type.name}))
        else:
            print(reservation.name)
        return 0
    finally:
        conn.client.close()


@group.command('list', short_help="The project's reservations.",
               epilog=options.examples('sky-mithril reservations list',
                                       'sky-mithril reservations list --json'))
@PROJECT
@options.json_option('the reservations')
def list_reservations(project: Optional[str], as_json: bool) -> int:
    """The project's reservations, by start time."""
    conn = common.connect(project)
    try:
        reservations = conn.client.list_reservations(conn.project_id)
        names = common.type_names(conn) if reservations else {}
        if as_json:
            print_json([reservation_json(r, names) for r in reservations])
            return 0
        if not reservations:
            print('No reservations. `sky-mithril reservations quote` prices one.')
            return 0
        print_table(['NAME', 'STATUS', 'TYPE', 'REGION', 'INSTANCES', 'START',
                     'END', 'UNIT PRICE'],
                    [[r.name, r.status, names.get(r.instance_type, r.instance_type),
                      r.region or '-', str(r.instance_quantity), _when(r.start_time),
                      _when(r.end_time), per_hour(r.unit_price)]
                     for r in sorted(reservations, key=lambda r: r.start_time)])
        return 0
    finally:
        conn.client.close()


@group.command('info', short_help='One reservation and what it cost.',
               epilog=options.examples('sky-mithril reservations info train',
                                       'sky-mithril reservations info res_abc123 --json'))
@RESERVATION
@PROJECT
@options.json_option('the reservation, its instances and its money')
def show_reservation(reservation_name_or_fid: str, project: Optional[str],
                     as_json: bool) -> int:
    """One reservation (RESERVATION: its name or fid), its instances, and
    what it was charged and earned back."""
    conn = common.connect(project)
    try:
        reservation = find_reservation(conn, reservation_name_or_fid)
        instances = conn.client.list_instances(conn.project_id,
                                               reservation_fids=[reservation.fid])
        usage = conn.client.get_reservation_usage(reservation.fid).summary
        info = {**reservation_json(reservation, common.type_names(conn)),
                'nodes': [{'fid': i.fid, 'status': i.status,
                           'ssh_destination': i.ssh_destination} for i in instances],
                'charged': dollars(money.cents_to_dollars(usage.committed_cost_cents)),
                'pause_credit': dollars(money.cents_to_dollars(usage.flex_use_credits_cents)),
                'return_credit': dollars(money.cents_to_dollars(
                    usage.early_termination_credits_cents)),
                'net_cost': dollars(money.cents_to_dollars(usage.net_cost_cents))}
        if as_json:
            print_json(info)
            return 0
        for label, key in (('Reservation', 'name'), ('Fid', 'fid'),
                           ('Status', 'status'), ('Type', 'instance_type'),
                           ('Region', 'region'), ('Start', 'start_time'),
                           ('End', 'end_time'), ('Unit price', 'unit_price'),
                           ('Charged', 'charged'), ('Pause credit', 'pause_credit'),
                           ('Return credit', 'return_credit'), ('Net cost', 'net_cost')):
            print(f'{label + ":":<15}{info[key]}')
        print_table(['INSTANCE', 'STATUS', 'SSH'],
                    [[i.fid, i.status, i.ssh_destination or '-'] for i in instances])
        return 0
    finally:
        conn.client.close()


@group.command('extend', short_help='Move the end later (charged now).',
               epilog=options.examples('sky-mithril reservations extend train --hours 12'))
@RESERVATION
@click.option('--hours', 'added_hours', type=options.POSITIVE_INT,
              required=True, help='hours to add')
@options.YES
@PROJECT
def extend_reservation(reservation_name_or_fid: str, added_hours: int,
                       yes: bool, project: Optional[str]) -> int:
    """Move a reservation's end later by whole hours; charged now. Asks
    first (-y does not ask)."""
    conn = common.connect(project)
    try:
        reservation = find_reservation(conn, reservation_name_or_fid)
        new_end = reservation.end_time + datetime.timedelta(hours=added_hours)
        latest = conn.client.get_extension_availability(reservation.fid)
        if not latest.available or new_end > latest.latest_extension_time:
            raise CommandError(
                f'{reservation.name} can be extended to '
                f'{_when(latest.latest_extension_time)} at the latest, not '
                f'{_when(new_end)}.' if latest.available else
                f'{reservation.name} cannot be extended now.')
        cost = reservation.unit_price * reservation.instance_quantity * added_hours
        if not confirm(f'Extend {reservation.name} to {_when(new_end)} for about '
                       f'{dollars(cost)}, charged now?', yes):
            progress('Nothing changed.')
            return 1
        with project_snapshot.changing(conn):
            extended = conn.client.extend_reservation(reservation.fid, new_end)
        print(f'{extended.name} now ends {_when(extended.end_time)}.')
        return 0
    finally:
        conn.client.close()


def _set_paused(reservation_name_or_fid: str, project: Optional[str],
                paused: bool) -> int:
    conn = common.connect(project)
    try:
        reservation = find_reservation(conn, reservation_name_or_fid)
        with project_snapshot.changing(conn):
            changed = conn.client.update_reservation(reservation.fid,
                                                     paused=paused)
        if paused:
            progress('Paused instances earn the pause credit once paused an '
                     'hour; their capacity stays yours.')
        else:
            progress('Resuming can take minutes (Mithril may first preempt a '
                     'spot bid using the capacity).')
        print(f'{changed.name}: {changed.status}')
        return 0
    finally:
        conn.client.close()


def _return_rate(conn: connection.Connection,
                 reservation: models.Reservation) -> Optional[Decimal]:
    """What a returned instance earns per hour left, from the terms in the
    reservation's history (None if it states none)."""
    rates = [event.return_credit_cents
             for event in conn.client.get_reservation_history(reservation.fid).events
             if event.return_credit_cents is not None]
    return money.cents_to_dollars(rates[-1]) if rates else None


@group.command('pause', short_help='Pause every instance (capacity kept).',
               epilog=options.examples('sky-mithril reservations pause train'))
@RESERVATION
@PROJECT
def pause_reservation(reservation_name_or_fid: str,
                      project: Optional[str]) -> int:
    """Pause every instance of a reservation: its capacity stays yours, and
    an instance paused an hour earns the pause credit."""
    return _set_paused(reservation_name_or_fid, project, True)


@group.command('resume', short_help='Resume paused instances.',
               epilog=options.examples('sky-mithril reservations resume train'))
@RESERVATION
@PROJECT
def resume_reservation(reservation_name_or_fid: str,
                       project: Optional[str]) -> int:
    """Resume a reservation's paused instances (minutes: Mithril may first
    preempt a spot bid using the capacity)."""
    return _set_paused(reservation_name_or_fid, project, False)


@group.command('return', short_help='Give instances back for good.',
               epilog=options.examples(
                   'sky-mithril reservations return train inst_abc123',
                   'sky-mithril reservations return train inst_abc123 inst_def456 -y'))
@RESERVATION
@click.argument('instance_fids', nargs=-1, required=True, metavar='INSTANCE...')
@options.YES
@PROJECT
def return_instances(reservation_name_or_fid: str,
                     instance_fids: Tuple[str, ...], yes: bool,
                     project: Optional[str]) -> int:
    """Give instances of a reservation back for good (their disks are
    deleted), for the return credit. Asks first (-y does not ask)."""
    conn = common.connect(project)
    try:
        reservation = find_reservation(conn, reservation_name_or_fid)
        returning = list(instance_fids)
        unknown = sorted(set(returning) - set(reservation.instances))
        if unknown:
            raise CommandError(f'Not instances of {reservation.name}: '
                               f'{", ".join(unknown)}; its instances: '
                               f'{", ".join(reservation.instances) or "none yet"}.')
        now = conn.client.server_now()
        hours_left = max(Decimal(0), Decimal((reservation.end_time - max(
            reservation.start_time, now)).total_seconds()) / 3600)
        rate = _return_rate(conn, reservation)
        credit = (f'a credit of about {dollars(rate * len(returning) * hours_left)}'
                  if rate is not None else 'the return credit')
        progress(f'Returning {len(returning)} of {reservation.name}\'s '
                 f'{reservation.instance_quantity} instances for good (their '
                 f'disks are deleted): {", ".join(returning)}.')
        if not confirm(f'Return them for {credit}?', yes):
            progress('Nothing was returned.')
            return 1
        with project_snapshot.changing(conn):
            returned = conn.client.return_reservation_instances(
                reservation.fid, returning)
        print(f'Returned: {", ".join(returned.terminated_instances)}')
        if returned.partial:
            kept = sorted(set(returning) - set(returned.terminated_instances))
            raise CommandError(f'Mithril could not return {", ".join(kept)} now '
                               '(busy, e.g. restarting); try again in a minute.')
        return 0
    finally:
        conn.client.close()
