"""The checks every race test ends with: the jackpot's books and the gold ledger balance."""

from django.core.management import call_command
from django.db.models import Sum

from game import gold
from jackpot.ledger import audit_pools
from jackpot.models import Contribution, LedgerEntry, Win


def assert_books_balance():
    """`manage.py jackpot_audit` passes (pool = ledger sum, unbroken chains), every pool's
    contribution rows add up to what the contributions gave it, every win's payout left its
    pool through a `win` row, and every player's gold equals the sum of their gold ledger."""
    call_command("jackpot_audit")  # CommandError on any mismatch
    assert all(a.ok for a in audit_pools())
    for group in ("minor", "major", "mega"):
        ledgered = LedgerEntry.objects.filter(pool__group=group, kind="contribution").aggregate(
            s=Sum("amount", default=0)
        )["s"]
        parts = Contribution.objects.aggregate(s=Sum(f"{group}_amount", default=0))["s"]
        assert ledgered == parts, group
    paid = Win.objects.aggregate(s=Sum("amount", default=0))["s"]
    taken = LedgerEntry.objects.filter(kind="win").aggregate(s=Sum("amount", default=0))["s"]
    assert paid == -taken
    assert gold.audit() == []
