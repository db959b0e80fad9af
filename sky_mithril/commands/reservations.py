"""`sky-mithril reservations quote|create|list|info|extend|pause|resume|return`:
Mithril's reserved capacity. Money moves at `create` (the whole price, now)
and at `return` (instances deleted for good, for a credit), so both show the
numbers first and ask for confirmation (`-y` skips it)."""

import argparse
import datetime
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sky_mithril import money
from sky_mithril.account import connection
from sky_mithril.api import models
from sky_mithril.commands import common
from sky_mithril.commands import keys
from sky_mithril.commands.output import (CommandError, confirm, dollars, per_hour,
                                         print_json, print_table, progress)

# Mithril sells windows of whole hours, from 3 hours to 2 weeks.
MIN_HOURS = 3
MAX_HOURS = 336


def hours(text: str) -> int:
    """`--hours`: whole hours from MIN_HOURS to MAX_HOURS."""
    if not text.strip().isdigit() or not MIN_HOURS <= int(text) <= MAX_HOURS:
        raise argparse.ArgumentTypeError(
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
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a start time: give `now` or an ISO 8601 time '
            'such as 2030-01-31T09:00 (UTC)') from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


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


def _type_names(conn: connection.Connection) -> Dict[str, str]:
    return {t.fid: t.name for t in conn.client.list_instance_types()}


def _cmd_quote(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        instance_type = _reservable_type(conn, args.instance_type, args.region)
        begin, end = _window(conn, args.start, args.hours)
        quote = conn.client.quote_reservation(conn.project_id, instance_type.fid,
                                              args.region, begin, end,
                                              args.num_instances)
        if args.json:
            print_json([_offer_json(offer) for offer in quote.offers])
            return 0
        print(f'{args.num_instances} × {instance_type.name} in {args.region}, '
              f'{_when(begin)} → {_when(end)} ({args.hours} h):')
        for offer in quote.offers:
            if len(quote.offers) > 1:
                print(f' {offer.display_name} ({offer.key}):')
            print('\n'.join(_offer_lines(offer)))
        return 0
    finally:
        conn.client.close()


def _cmd_create(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        instance_type = _reservable_type(conn, args.instance_type, args.region)
        begin, end = _window(conn, args.start, args.hours)
        offer = _standard_offer(conn.client.quote_reservation(
            conn.project_id, instance_type.fid, args.region, begin, end,
            args.num_instances))
        if args.max_unit_price is not None and offer.unit_price > args.max_unit_price:
            raise CommandError(
                f'The unit price is {per_hour(offer.unit_price)}, above your '
                f'--max-unit-price {per_hour(args.max_unit_price)}; nothing '
                'was bought.')
        progress(f'Reservation {args.name}: {args.num_instances} × '
                 f'{instance_type.name} in {args.region}, {_when(begin)} → '
                 f'{_when(end)} ({args.hours} h)')
        progress('\n'.join(_offer_lines(offer)))
        if not confirm(f'Buy it for {dollars(offer.total_price)}, charged now?',
                       args.yes):
            progress('Nothing was bought.')
            return 1
        # The guard Mithril applies if its price moved since the quote.
        ceiling = args.max_unit_price or offer.unit_price
        request = models.CreateReservationRequest(
            project=conn.project_id, instance_type=instance_type.fid,
            region=args.region, start_time=begin, end_time=end,
            instance_quantity=args.num_instances, name=args.name,
            launch_specification=models.LaunchSpecification(
                ssh_keys=keys.key_fids_for_new_bid(conn)),
            price_specification=models.PriceSpecification(
                offer_key=offer.key, max_unit_price=money.dollars_to_cents(ceiling)))
        reservation = conn.client.create_reservation(request)
        progress(f'Bought {reservation.fid} for {dollars(reservation.total_price)}.')
        if args.json:
            print_json(reservation_json(reservation, {instance_type.fid:
                                                      instance_type.name}))
        else:
            print(reservation.name)
        return 0
    finally:
        conn.client.close()


def _cmd_list(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        reservations = conn.client.list_reservations(conn.project_id)
        names = _type_names(conn) if reservations else {}
        if args.json:
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


def _cmd_info(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        reservation = find_reservation(conn, args.reservation)
        instances = conn.client.list_instances(conn.project_id,
                                               reservation_fids=[reservation.fid])
        usage = conn.client.get_reservation_usage(reservation.fid).summary
        info = {**reservation_json(reservation, _type_names(conn)),
                'nodes': [{'fid': i.fid, 'status': i.status,
                           'ssh_destination': i.ssh_destination} for i in instances],
                'charged': dollars(money.cents_to_dollars(usage.committed_cost_cents)),
                'pause_credit': dollars(money.cents_to_dollars(usage.flex_use_credits_cents)),
                'return_credit': dollars(money.cents_to_dollars(
                    usage.early_termination_credits_cents)),
                'net_cost': dollars(money.cents_to_dollars(usage.net_cost_cents))}
        if args.json:
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


def _cmd_extend(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        reservation = find_reservation(conn, args.reservation)
        new_end = reservation.end_time + datetime.timedelta(hours=args.hours)
        latest = conn.client.get_extension_availability(reservation.fid)
        if not latest.available or new_end > latest.latest_extension_time:
            raise CommandError(
                f'{reservation.name} can be extended to '
                f'{_when(latest.latest_extension_time)} at the latest, not '
                f'{_when(new_end)}.' if latest.available else
                f'{reservation.name} cannot be extended now.')
        cost = reservation.unit_price * reservation.instance_quantity * args.hours
        if not confirm(f'Extend {reservation.name} to {_when(new_end)} for about '
                       f'{dollars(cost)}, charged now?', args.yes):
            progress('Nothing changed.')
            return 1
        extended = conn.client.extend_reservation(reservation.fid, new_end)
        print(f'{extended.name} now ends {_when(extended.end_time)}.')
        return 0
    finally:
        conn.client.close()


def _set_paused(args: argparse.Namespace, paused: bool) -> int:
    conn = common.connect(args.project)
    try:
        reservation = find_reservation(conn, args.reservation)
        changed = conn.client.update_reservation(reservation.fid, paused=paused)
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


def _cmd_return(args: argparse.Namespace) -> int:
    conn = common.connect(args.project)
    try:
        reservation = find_reservation(conn, args.reservation)
        unknown = sorted(set(args.instances) - set(reservation.instances))
        if unknown:
            raise CommandError(f'Not instances of {reservation.name}: '
                               f'{", ".join(unknown)}; its instances: '
                               f'{", ".join(reservation.instances) or "none yet"}.')
        now = conn.client.server_now()
        hours_left = max(Decimal(0), Decimal((reservation.end_time - max(
            reservation.start_time, now)).total_seconds()) / 3600)
        rate = _return_rate(conn, reservation)
        credit = (f'a credit of about {dollars(rate * len(args.instances) * hours_left)}'
                  if rate is not None else 'the return credit')
        progress(f'Returning {len(args.instances)} of {reservation.name}\'s '
                 f'{reservation.instance_quantity} instances for good (their '
                 f'disks are deleted): {", ".join(args.instances)}.')
        if not confirm(f'Return them for {credit}?', args.yes):
            progress('Nothing was returned.')
            return 1
        returned = conn.client.return_reservation_instances(reservation.fid,
                                                            args.instances)
        print(f'Returned: {", ".join(returned.terminated_instances)}')
        if returned.partial:
            kept = sorted(set(args.instances) - set(returned.terminated_instances))
            raise CommandError(f'Mithril could not return {", ".join(kept)} now '
                               '(busy, e.g. restarting); try again in a minute.')
        return 0
    finally:
        conn.client.close()


def _price(text: str) -> Decimal:
    try:
        return money.parse_dollars(text)
    except (ValueError, ArithmeticError):
        raise argparse.ArgumentTypeError(
            f'{text!r} is not a price per instance-hour, e.g. 2.50') from None


def _add_common(parser: argparse.ArgumentParser,
                json_help: Optional[str] = None) -> None:
    parser.add_argument('--project', help='project name or fid (default: '
                        "your profile's)")
    if json_help:
        parser.add_argument('--json', action='store_true', help=json_help)


def _add_window(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('instance_type', help='e.g. a100-80gb.sxm.8x')
    parser.add_argument('-r', '--region', required=True, help='e.g. us-central3-a')
    parser.add_argument('--hours', type=hours, required=True,
                        help=f'length, whole hours {MIN_HOURS}-{MAX_HOURS}')
    parser.add_argument('--start', type=start_time, default=None,
                        help='`now` (default) or an ISO 8601 time, UTC')
    parser.add_argument('-N', '--num-instances', type=common.positive_int,
                        default=1, help='instances (default 1)')


def add_parser(commands: argparse._SubParsersAction) -> None:
    """`reservations` and its subcommands."""
    group = commands.add_parser('reservations',
                                help="Mithril's reserved capacity: quote, buy, use")
    sub = group.add_subparsers(dest='reservations_command', required=True)
    quote = sub.add_parser('quote', help='price a reservation (buys nothing)')
    _add_window(quote)
    _add_common(quote, 'the offers as JSON')
    quote.set_defaults(handler=_cmd_quote)
    create = sub.add_parser('create', help='buy a reservation (charged now, in full)')
    create.add_argument('name', help='the reservation\'s name')
    _add_window(create)
    create.add_argument('--max-unit-price', type=_price,
                        help='refuse if the unit price is above this ($/instance-hour)')
    create.add_argument('-y', '--yes', action='store_true', help='do not ask')
    _add_common(create, 'the reservation as JSON')
    create.set_defaults(handler=_cmd_create)
    listing = sub.add_parser('list', help='the project\'s reservations')
    _add_common(listing, 'the reservations as JSON')
    listing.set_defaults(handler=_cmd_list)
    info = sub.add_parser('info', help='one reservation, its instances and '
                          'what it cost')
    info.add_argument('reservation', help='name or fid')
    _add_common(info, 'as JSON')
    info.set_defaults(handler=_cmd_info)
    for name, paused, what in (('pause', True, 'pause every instance (capacity kept)'),
                               ('resume', False, 'resume paused instances')):
        command = sub.add_parser(name, help=what)
        command.add_argument('reservation', help='name or fid')
        _add_common(command)
        command.set_defaults(handler=lambda a, paused=paused: _set_paused(a, paused))
    extend = sub.add_parser('extend', help='move the end later (charged now)')
    extend.add_argument('reservation', help='name or fid')
    extend.add_argument('--hours', type=common.positive_int, required=True,
                        help='hours to add')
    extend.add_argument('-y', '--yes', action='store_true', help='do not ask')
    _add_common(extend)
    extend.set_defaults(handler=_cmd_extend)
    giveback = sub.add_parser('return', help='give instances back for good, '
                              'for the return credit')
    giveback.add_argument('reservation', help='name or fid')
    giveback.add_argument('instances', nargs='+', help='instance fids')
    giveback.add_argument('-y', '--yes', action='store_true', help='do not ask')
    _add_common(giveback)
    giveback.set_defaults(handler=_cmd_return)

