"""Column roles: common names found, explicit names win, clear errors otherwise."""

from __future__ import annotations

import pytest

from gpuseg.columns import ColumnMapping, resolve_columns
from gpuseg.errors import GpusegError


# -- auto-detection --------------------------------------------------------------

@pytest.mark.parametrize("name", ["customer_id", "CustomerID", "Customer ID", "customer-id", "CUSTOMER_ID"])
def test_customer_column_found_under_common_spellings(name):
    m = resolve_columns([name, "date", "amount"])
    assert m.customer == name


@pytest.mark.parametrize("name", ["invoice_date", "InvoiceDate", "date", "order_date", "Invoice Date"])
def test_date_column_found_under_common_spellings(name):
    m = resolve_columns(["customer_id", name, "amount"])
    assert m.date == name


@pytest.mark.parametrize("name", ["InvoiceNo", "Invoice", "invoice_id", "order_id"])
def test_invoice_column_found_under_common_spellings(name):
    m = resolve_columns(["customer_id", "date", name, "amount"])
    assert m.invoice == name


@pytest.mark.parametrize("name", ["amount", "total", "sales", "Amount", "line_total"])
def test_amount_column_found_under_common_spellings(name):
    m = resolve_columns(["customer_id", "date", name])
    assert (m.amount, m.quantity, m.price) == (name, None, None)


@pytest.mark.parametrize("price", ["UnitPrice", "Price", "unit_price"])
def test_quantity_and_price_found_when_no_amount(price):
    m = resolve_columns(["CustomerID", "InvoiceDate", "Quantity", price])
    assert (m.amount, m.quantity, m.price) == (None, "Quantity", price)
    assert m.needed == ["CustomerID", "InvoiceDate", "Quantity", price]


def test_online_retail_header_maps_every_role():
    cols = ["InvoiceNo", "StockCode", "Description", "Quantity", "InvoiceDate", "UnitPrice", "CustomerID",
            "Country"]
    m = resolve_columns(cols)
    assert m == ColumnMapping(customer="CustomerID", date="InvoiceDate", invoice="InvoiceNo",
                              quantity="Quantity", price="UnitPrice")


def test_invoice_is_optional():
    m = resolve_columns(["customer_id", "date", "amount"])
    assert m.invoice is None
    assert m.needed == ["customer_id", "date", "amount"]


def test_better_candidate_wins_over_later_one():
    # "invoice_date" is listed before "date"; both exist.
    m = resolve_columns(["customer_id", "date", "invoice_date", "amount"])
    assert m.date == "invoice_date"


def test_date_column_is_not_taken_for_the_invoice():
    m = resolve_columns(["CustomerID", "InvoiceDate", "amount"])
    assert m.invoice is None


# -- explicit names ----------------------------------------------------------------

def test_explicit_names_override_detection():
    cols = ["customer_id", "cid", "date", "when", "amount", "net", "invoice", "receipt"]
    m = resolve_columns(cols, {"customer": "cid", "date": "when", "amount": "net", "invoice": "receipt"})
    assert (m.customer, m.date, m.amount, m.invoice) == ("cid", "when", "net", "receipt")


def test_explicit_names_for_unusual_headers():
    m = resolve_columns(["a", "b", "c", "d"], {"customer": "a", "date": "b", "quantity": "c", "price": "d"})
    assert m == ColumnMapping(customer="a", date="b", quantity="c", price="d")


def test_empty_or_none_explicit_names_are_ignored():
    m = resolve_columns(["customer_id", "date", "amount"], {"customer": None, "date": ""})
    assert (m.customer, m.date) == ("customer_id", "date")


def test_column_taken_by_an_explicit_role_is_not_auto_detected_for_another():
    # The user says "Invoice" holds the customer; it must not also be the invoice.
    m = resolve_columns(["Invoice", "date", "amount"], {"customer": "Invoice"})
    assert m.customer == "Invoice"
    assert m.invoice is None


# -- amount vs quantity × price -----------------------------------------------------

def test_amount_column_preferred_over_quantity_times_price():
    m = resolve_columns(["customer_id", "date", "amount", "quantity", "price"])
    assert (m.amount, m.quantity, m.price) == ("amount", None, None)
    assert "quantity" not in m.needed and "price" not in m.needed


def test_explicit_quantity_and_price_beat_a_detected_amount():
    m = resolve_columns(["customer_id", "date", "amount", "qty", "each"], {"quantity": "qty", "price": "each"})
    assert (m.amount, m.quantity, m.price) == (None, "qty", "each")


def test_explicit_quantity_with_detected_price():
    m = resolve_columns(["customer_id", "date", "total", "n", "unit_price"], {"quantity": "n"})
    assert (m.amount, m.quantity, m.price) == (None, "n", "unit_price")


def test_explicit_amount_beats_detected_quantity_and_price():
    m = resolve_columns(["customer_id", "date", "x", "quantity", "price"], {"amount": "x"})
    assert (m.amount, m.quantity, m.price) == ("x", None, None)


# -- errors ------------------------------------------------------------------------------

def test_explicit_column_missing_names_the_option_and_lists_columns():
    with pytest.raises(GpusegError) as info:
        resolve_columns(["customer_id", "date", "amount"], {"customer": "client"})
    msg = str(info.value)
    assert "'client'" in msg and "--customer-col" in msg
    assert "customer_id, date, amount" in msg
    assert "\n" not in msg


@pytest.mark.parametrize("role, option", [("date", "--date-col"), ("invoice", "--invoice-col"),
                                          ("amount", "--amount-col"), ("quantity", "--quantity-col"),
                                          ("price", "--price-col")])
def test_each_explicit_role_names_its_own_option(role, option):
    with pytest.raises(GpusegError, match=option):
        resolve_columns(["customer_id", "date", "amount", "quantity", "price"], {role: "nope"})


def test_no_customer_column():
    with pytest.raises(GpusegError) as info:
        resolve_columns(["shop", "date", "amount"])
    msg = str(info.value)
    assert "no customer column" in msg and "--customer-col" in msg and "shop, date, amount" in msg


def test_no_date_column():
    with pytest.raises(GpusegError) as info:
        resolve_columns(["customer_id", "when", "amount"])
    msg = str(info.value)
    assert "no date column" in msg and "--date-col" in msg and "customer_id, when, amount" in msg


def test_no_amount_and_no_price():
    with pytest.raises(GpusegError) as info:
        resolve_columns(["customer_id", "date", "quantity"])
    msg = str(info.value)
    assert "--price-col" in msg and "--amount-col" in msg
    assert "missing --price-col" in msg and "missing --quantity-col" not in msg
    assert "customer_id, date, quantity" in msg


def test_no_amount_and_nothing_to_multiply():
    with pytest.raises(GpusegError, match="missing --quantity-col and --price-col"):
        resolve_columns(["customer_id", "date"])


def test_unknown_role_is_rejected():
    with pytest.raises(GpusegError, match="unknown column role"):
        resolve_columns(["customer_id", "date", "amount"], {"shop": "date"})


def test_mapping_to_dict_round_trips():
    m = resolve_columns(["customer_id", "date", "invoice", "amount"])
    assert ColumnMapping(**m.to_dict()) == m
    assert m.to_dict() == {"customer": "customer_id", "date": "date", "invoice": "invoice", "amount": "amount",
                           "quantity": None, "price": None}


def test_an_invoice_named_empty_is_no_invoice_and_a_mapping_comes_back_from_its_explicit_names():
    names = ["customer_id", "invoice_date", "invoice", "amount", "quantity", "unit_price"]
    assert resolve_columns(names).invoice == "invoice"
    assert resolve_columns(names, {"invoice": ""}).invoice is None
    for mapping in (ColumnMapping("customer_id", "invoice_date", None, None, "quantity", "unit_price"),
                    ColumnMapping("customer_id", "invoice_date", "invoice", "amount")):
        assert resolve_columns(names, mapping.explicit()) == mapping
