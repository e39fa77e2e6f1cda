"""Which input column plays which role: explicit options, else common names."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from .errors import GpusegError

ROLES = ("customer", "date", "invoice", "amount", "quantity", "price")

#: Common spellings per role, best first; compared after dropping case,
#: spaces, underscores and hyphens ("Customer ID" == "customer_id" == "CustomerID").
CANDIDATES: dict[str, tuple[str, ...]] = {
    "customer": ("customer_id", "customer", "customer_no", "customer_number", "cust_id",
                 "client_id", "member_id", "user_id", "account_id", "shopper_id"),
    "date": ("invoice_date", "order_date", "transaction_date", "purchase_date", "date",
             "datetime", "timestamp", "txn_date", "sale_date", "order_datetime"),
    "invoice": ("invoice_no", "invoice", "invoice_id", "invoice_number", "order_id",
                "order_no", "order_number", "transaction_id", "receipt_id", "basket_id", "order"),
    "amount": ("amount", "line_amount", "line_total", "total", "total_price", "sales",
               "revenue", "net_amount", "value", "spend", "sale_amount"),
    "quantity": ("quantity", "qty", "units", "unit_count"),
    "price": ("unit_price", "price", "unit_cost", "price_each"),
}

OPTION_NAMES = {role: f"--{role}-col" for role in ROLES}

#: An invoice named ``""``: the input's orders are customer-days, whatever invoice column it has.
NO_COLUMN = ""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class ColumnMapping:
    """Input column names by role; ``None`` where the input has no such column."""

    customer: str
    date: str
    invoice: str | None = None
    amount: str | None = None
    quantity: str | None = None
    price: str | None = None

    @property
    def needed(self) -> list[str]:
        """The columns to read, each once."""
        cols = [self.customer, self.date, self.invoice]
        cols += [self.amount] if self.amount else [self.quantity, self.price]
        return list(dict.fromkeys(c for c in cols if c))

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    def explicit(self) -> dict[str, str]:
        """This mapping as explicit names for :func:`resolve_columns`, which gives it back
        whatever other columns the input has (no invoice stays no invoice: ``""``)."""
        names = {role: col for role, col in asdict(self).items() if col}
        return names if self.invoice else {**names, "invoice": NO_COLUMN}

    def csv_types(self, text: object, number: object) -> dict[str, object]:
        """Column types for reading CSV: ids and dates as ``text`` (keeps leading
        zeros; a bad date is one dropped row, not a failed read), amounts as ``number``."""
        types = {self.customer: text, self.date: text}
        if self.invoice:
            types[self.invoice] = text
        for col in (self.amount, self.quantity, self.price):
            if col:
                types[col] = number
        return types


def found_quantity_price(available: Sequence[str], explicit: Mapping[str, str | None] | None,
                         amount: str) -> tuple[str, str] | None:
    """The quantity and unit price columns :func:`resolve_columns` would use without the ``amount``
    column it found (explicit names first), or None when ``available`` lacks either."""
    try:
        found = resolve_columns([c for c in available if c != amount],
                                {k: v for k, v in (explicit or {}).items() if k != "amount"})
    except GpusegError:
        return None
    return (found.quantity, found.price) if found.quantity and found.price else None


def resolve_columns(available: Sequence[str],
                    explicit: Mapping[str, str | None] | None = None) -> ColumnMapping:
    """Map roles to columns of ``available``.

    Explicit names win and must exist; other roles are looked up among
    :data:`CANDIDATES`. The amount is the amount column, else quantity × price.

    Raises
    ------
    GpusegError
        When a named column is missing, or a required role has no column.
    """
    none = {k for k, v in (explicit or {}).items() if k == "invoice" and v == NO_COLUMN}
    explicit = {k: v for k, v in (explicit or {}).items() if v}
    unknown = set(explicit) - set(ROLES)
    if unknown:
        raise GpusegError(f"unknown column role(s) {sorted(unknown)}; allowed: {', '.join(ROLES)}")
    listing = ", ".join(available)
    by_key: dict[str, str] = {}
    for name in available:
        by_key.setdefault(_key(name), name)

    found: dict[str, str | None] = {}
    for role in ROLES:
        if role in none:
            found[role] = None
            continue
        if role in explicit:
            name = explicit[role]
            if name not in available:
                raise GpusegError(f"column {name!r} given by {OPTION_NAMES[role]} is not in the input; "
                                  f"columns are: {listing}")
            found[role] = name
            continue
        found[role] = next((by_key[_key(c)] for c in CANDIDATES[role] if _key(c) in by_key), None)

    taken = [v for v in found.values() if v]
    for role in ("invoice", "amount", "quantity", "price"):  # one column, one role
        if role not in explicit and found[role] and taken.count(found[role]) > 1:
            found[role] = None
            taken = [v for v in found.values() if v]

    for role in ("customer", "date"):
        if not found[role]:
            raise GpusegError(f"no {role} column found; name it with {OPTION_NAMES[role]} "
                              f"(columns are: {listing})")
    if found["amount"]:
        if "amount" not in explicit and ("quantity" in explicit or "price" in explicit):
            found["amount"] = None  # the user asked for quantity × price
    if not found["amount"] and not (found["quantity"] and found["price"]):
        missing = [OPTION_NAMES[r] for r in ("quantity", "price") if not found[r]]
        raise GpusegError("no amount column found, and no quantity and unit price to multiply "
                          f"(missing {' and '.join(missing)}); name one with --amount-col, "
                          f"or both with --quantity-col and --price-col (columns are: {listing})")
    if found["amount"]:
        found["quantity"] = found["price"] = None
    return ColumnMapping(**found)  # type: ignore[arg-type]
