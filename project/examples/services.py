"""Stand-ins for the outside systems the example workflows talk to.

A real shop would call a warehouse, a payment provider and an order database. These
fakes keep their state in memory (per process) so that the examples run anywhere,
and they behave like the real thing where it matters to a workflow: calls keyed by
the step's idempotency key are not repeated, a declined card fails, and every
side effect has an undo (release, refund, cancel, revoke).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Any

from ulid import ULID

# Prices are integer cents; ``tax_rate`` is a percentage.
CATALOGUE: dict[str, dict[str, Any]] = {
    "tshirt": {"title": "Workflow T-shirt", "price": 2500, "tax_rate": 20, "digital": False},
    "mug": {"title": "Compensation mug", "price": 1200, "tax_rate": 20, "digital": False},
    "ebook": {"title": "Sagas in Practice (e-book)", "price": 1900, "tax_rate": 5, "digital": True},
    "course": {
        "title": "Durable Execution (video course)",
        "price": 9900,
        "tax_rate": 20,
        "digital": True,
    },
}

INITIAL_STOCK: dict[str, int] = {"tshirt": 100, "mug": 40}

# Payment tokens the fake provider declines, as a real provider's test cards do.
DECLINED_TOKENS = frozenset({"tok_chargeDeclined", "tok_insufficientFunds"})


class OutOfStock(Exception):
    """Not enough units of a product are left to reserve."""


class CardDeclined(Exception):
    """The payment provider refused the authorisation."""


def _new_id(prefix: str) -> str:
    return f"{prefix}_{str(ULID()).lower()}"


class Inventory:
    """Stock levels and the reservations held against them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.stock: dict[str, int] = {}
        self.reservations: dict[str, list[dict[str, Any]]] = {}
        self._by_key: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        with self._lock:
            self.stock = dict(INITIAL_STOCK)
            self.reservations = {}
            self._by_key = {}

    def reserve(self, lines: Iterable[dict[str, Any]], key: str) -> str:
        """Hold ``quantity`` units of each line's sku; the same ``key`` reserves once."""
        wanted = [{"sku": line["sku"], "quantity": line["quantity"]} for line in lines]
        with self._lock:
            if key in self._by_key:
                return self._by_key[key]
            for line in wanted:
                left = self.stock.get(line["sku"], 0)
                if left < line["quantity"]:
                    raise OutOfStock(
                        f"Only {left} unit(s) of {line['sku']} left, {line['quantity']} wanted"
                    )
            for line in wanted:
                self.stock[line["sku"]] -= line["quantity"]
            reservation_id = _new_id("res")
            self.reservations[reservation_id] = wanted
            self._by_key[key] = reservation_id
            return reservation_id

    def release(self, reservation_id: str) -> bool:
        """Put a reservation's units back; False when it was already released."""
        with self._lock:
            lines = self.reservations.pop(reservation_id, None)
            if lines is None:
                return False
            for line in lines:
                self.stock[line["sku"]] = self.stock.get(line["sku"], 0) + line["quantity"]
            return True


class PaymentGateway:
    """Authorisations and refunds of a card payment provider."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.payments: dict[str, dict[str, Any]] = {}
        self._by_key: dict[str, str] = {}

    def reset(self) -> None:
        with self._lock:
            self.payments = {}
            self._by_key = {}

    def authorize(self, amount: int, currency: str, token: str, key: str) -> dict[str, Any]:
        """Hold ``amount`` on the card; the same ``key`` authorises once."""
        if token in DECLINED_TOKENS:
            raise CardDeclined(f"The card was declined ({token})")
        with self._lock:
            if key in self._by_key:
                return dict(self.payments[self._by_key[key]])
            payment = {
                "id": _new_id("pay"),
                "amount": amount,
                "currency": currency,
                "status": "authorized",
            }
            self.payments[payment["id"]] = payment
            self._by_key[key] = payment["id"]
            return dict(payment)

    def refund(self, payment_id: str) -> dict[str, Any] | None:
        """Release the hold; refunding twice is harmless. None for an unknown payment."""
        with self._lock:
            payment = self.payments.get(payment_id)
            if payment is None:
                return None
            payment["status"] = "refunded"
            return dict(payment)


class OrderBook:
    """The orders a shop has accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.orders: dict[str, dict[str, Any]] = {}

    def reset(self) -> None:
        with self._lock:
            self.orders = {}

    def create(self, order: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            record = {**order, "id": _new_id("order"), "status": "placed"}
            self.orders[record["id"]] = record
            return dict(record)

    def cancel(self, order_id: str) -> bool:
        with self._lock:
            record = self.orders.get(order_id)
            if record is None:
                return False
            record["status"] = "canceled"
            return True


class LoyaltyProgram:
    """Points customers earn with their orders (the ``order_created`` hook's job)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.points: dict[str, int] = {}

    def reset(self) -> None:
        with self._lock:
            self.points = {}

    def award(self, customer: str, points: int) -> int:
        with self._lock:
            self.points[customer] = self.points.get(customer, 0) + points
            return self.points[customer]

    def revoke(self, customer: str, points: int) -> int:
        with self._lock:
            self.points[customer] = self.points.get(customer, 0) - points
            return self.points[customer]


inventory = Inventory()
payments = PaymentGateway()
orders = OrderBook()
loyalty = LoyaltyProgram()


def reset() -> None:
    """Back to the initial stock with no payments, orders or points (for tests)."""
    for service in (inventory, payments, orders, loyalty):
        service.reset()
