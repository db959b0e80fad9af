"""Dollar amounts: Decimal inside the plugin, "$x.yy" strings on Mithril's wire.

Mithril quotes bid prices as strings with a dollar sign ("$32.00") and the
pricing endpoints as integer cents. Floats never carry money here: a float
limit price such as 32.1 is read through its shortest decimal repr, so it is
exactly 32.10.
"""

from decimal import Decimal, InvalidOperation
from typing import Union

CENT = Decimal('0.01')

MoneyInput = Union[str, int, float, Decimal]


class MoneyFormatError(ValueError):
    """A value that is not a dollar amount."""


def parse_dollars(value: MoneyInput) -> Decimal:
    """Reads "$32.00", "32", 32, 32.5 or Decimal('32.5') as a Decimal.

    Raises MoneyFormatError for anything else (booleans, empty strings,
    "$", "abc", NaN, infinities).
    """
    if isinstance(value, bool):
        raise MoneyFormatError(f'{value!r} is not a dollar amount')
    if isinstance(value, Decimal):
        amount = value
    elif isinstance(value, (int, float)):
        amount = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    elif isinstance(value, str):
        text = value.strip().replace(',', '')
        if text.startswith('$'):
            text = text[1:].strip()
        if not text:
            raise MoneyFormatError(f'{value!r} is not a dollar amount')
        try:
            amount = Decimal(text)
        except InvalidOperation as e:
            raise MoneyFormatError(f'{value!r} is not a dollar amount') from e
    else:
        raise MoneyFormatError(f'{value!r} is not a dollar amount')
    if not amount.is_finite():
        raise MoneyFormatError(f'{value!r} is not a dollar amount')
    return amount


def format_dollars(amount: Decimal) -> str:
    """Formats a Decimal the way Mithril's API writes prices: "$32.00"."""
    return f'${amount.quantize(CENT):.2f}'


def cents_to_dollars(cents: int) -> Decimal:
    """Converts the pricing endpoints' integer cents to dollars."""
    return (Decimal(cents) / 100).quantize(CENT)


def dollars_to_cents(amount: Decimal) -> int:
    """Converts dollars to whole cents (rounding half up)."""
    return int((amount * 100).quantize(Decimal('1'), rounding='ROUND_HALF_UP'))
