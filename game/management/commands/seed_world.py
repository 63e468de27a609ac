"""`manage.py seed_world [--demo]`: the 81 zones and their routes, idempotently."""

from django.core.management.base import BaseCommand

from game.world import seed_world


class Command(BaseCommand):
    help = (
        "Create or repair the 81 zones, their storm bosses and the travel times between them. "
        "Running it again changes nothing. --demo also creates a few demo players."
    )

    def add_arguments(self, parser):
        parser.add_argument("--demo", action="store_true", help="also create demo players")

    def handle(self, *args, demo=False, **options):
        counts = seed_world(demo=demo)
        self.stdout.write(
            "seed_world: zones {zones_created} created, {zones_updated} updated; routes "
            "{routes_created} created, {routes_updated} updated; demo players "
            "{players_created} created".format(**counts)
        )
