"""`manage.py trigger_nightstorm <zone code>`: open a zone's Nightstorm now."""

from django.core.management.base import BaseCommand, CommandError

from game.models import NightstormEvent, Zone
from game.storms.firing import trigger_now


class Command(BaseCommand):
    help = "Open a zone's Nightstorm now (one event per zone per minute, however often called)."

    def add_arguments(self, parser):
        parser.add_argument("zone", help="zone code, e.g. as listed by GET /api/v1/zones/")

    def handle(self, *args, zone, **options):
        if not Zone.objects.filter(code=zone).exists():
            raise CommandError(f"no zone with code {zone!r}")
        event = NightstormEvent.objects.get(pk=trigger_now(zone))
        combats = event.combats.count()
        self.stdout.write(
            f"Nightstorm {event.pk} in {zone} for slot {event.slot:%Y-%m-%d %H:%M} UTC: "
            f"{event.state}, {combats} combat(s), registration closes "
            f"{event.registration_closes_at:%H:%M:%S} UTC"
        )
