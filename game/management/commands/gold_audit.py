"""`manage.py gold_audit`: every player's gold equals the sum of their gold ledger."""

from django.core.management.base import BaseCommand, CommandError

from game.gold import audit
from game.models import Player


class Command(BaseCommand):
    help = (
        "Check that every player's gold equals the sum of their gold ledger entries (one "
        "snapshot). Lists the players that do not match and exits with status 1 if any."
    )

    def handle(self, *args, **options):
        broken = audit()
        total = Player.all_objects.count()
        for row in broken[:100]:
            self.stdout.write(f"{row.name}: gold {row.gold}, ledger {row.ledger_sum}")
        if broken:
            raise CommandError(f"gold audit: {len(broken)} of {total} players do not match")
        self.stdout.write(f"gold audit: {total} players ok")
