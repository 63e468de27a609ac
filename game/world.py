"""The world's fixed data (81 zones in 9 regions, the travel times between them) and the
idempotent seeding service behind `manage.py seed_world`.

Zones sit on a 9 x 9 grid (each region a 3 x 3 block); the travel time between two zones grows
with their grid distance. Codes are stable: `<region prefix><1-9>`, e.g. `ASH1`.
"""

from dataclasses import dataclass

from django.contrib.auth import get_user_model
from django.db import transaction

from game import gold
from game.models import GoldKind, Player, Route, Zone

REGIONS = [
    ("ASH", "Ashen Reach"),
    ("BRI", "Briar Coast"),
    ("CIN", "Cinder Wastes"),
    ("DUS", "Duskmoor"),
    ("EMB", "Ember Vale"),
    ("FRO", "Frostmarch"),
    ("GLO", "Gloamwood"),
    ("HOL", "Hollow Peaks"),
    ("IRO", "Ironfen"),
]
PLACES = ["Gate", "Ford", "Hollow", "Spire", "Crossing", "Barrow", "Mire", "Watch", "Reach"]
BOSSES = ["Wyrm", "Colossus", "Hag", "Revenant", "Behemoth", "Tempest", "Warden", "Drake", "Lich"]
TRAVEL_BASE_SECONDS = 20
TRAVEL_SECONDS_PER_STEP = 15


@dataclass(frozen=True)
class ZoneSpec:
    code: str
    name: str
    region: str
    x: int
    y: int
    boss_name: str
    boss_hp: int
    boss_attack: int


def zone_specs() -> list[ZoneSpec]:
    specs = []
    for r, (prefix, region) in enumerate(REGIONS):
        for i, place in enumerate(PLACES):
            x, y = (r % 3) * 3 + i % 3, (r // 3) * 3 + i // 3
            tier = r + 1  # later regions have tougher storm bosses
            specs.append(
                ZoneSpec(
                    code=f"{prefix}{i + 1}",
                    name=f"{region.split()[0]} {place}",
                    region=region,
                    x=x,
                    y=y,
                    boss_name=f"Storm {BOSSES[i]} of {region}",
                    boss_hp=600 + 150 * tier + 25 * i,
                    boss_attack=6 + 2 * tier,
                )
            )
    return specs


def travel_seconds(a: ZoneSpec, b: ZoneSpec) -> int:
    return TRAVEL_BASE_SECONDS + TRAVEL_SECONDS_PER_STEP * (abs(a.x - b.x) + abs(a.y - b.y))


DEMO_PLAYERS = [("aria", "ASH1"), ("borin", "BRI1"), ("cael", "CIN1")]
DEMO_PASSWORD = "nightstorm-demo-password"
DEMO_GOLD = 100


def seed_world(*, demo: bool = False) -> dict[str, int]:
    """Create or repair the 81 zones and their routes (and demo players); return counts of rows
    created and updated. Running it again changes nothing."""
    created = updated = routes_created = routes_updated = players = 0
    specs = zone_specs()
    with transaction.atomic():
        existing = {z.code: z for z in Zone.objects.select_for_update()}
        for spec in specs:
            wanted = {
                "name": spec.name,
                "region": spec.region,
                "boss_name": spec.boss_name,
                "boss_hp": spec.boss_hp,
                "boss_attack": spec.boss_attack,
            }
            zone = existing.get(spec.code)
            if zone is None:
                existing[spec.code] = Zone.objects.create(code=spec.code, **wanted)
                created += 1
            elif any(getattr(zone, k) != v for k, v in wanted.items()):
                Zone.objects.filter(pk=zone.pk).update(**wanted)
                updated += 1
        ids = {code: existing[code].pk for code in (s.code for s in specs)}
        have = {
            (o, d): s for o, d, s in Route.objects.values_list("origin", "destination", "seconds")
        }
        new, stale = [], []
        for a in specs:
            for b in specs:
                if a is b:
                    continue
                key, seconds = (ids[a.code], ids[b.code]), travel_seconds(a, b)
                if key not in have:
                    new.append(Route(origin_id=key[0], destination_id=key[1], seconds=seconds))
                elif have[key] != seconds:
                    stale.append((key, seconds))
        # ignore_conflicts: a concurrent seeding inserted the same pair; the result is the same.
        Route.objects.bulk_create(new, batch_size=2000, ignore_conflicts=True)
        routes_created = len(new)
        for (origin, destination), seconds in stale:
            Route.objects.filter(origin_id=origin, destination_id=destination).update(
                seconds=seconds
            )
        routes_updated = len(stale)
        if demo:
            players = _seed_demo_players(ids)
    return {
        "zones_created": created,
        "zones_updated": updated,
        "routes_created": routes_created,
        "routes_updated": routes_updated,
        "players_created": players,
    }


def _seed_demo_players(zone_ids: dict[str, int]) -> int:
    User = get_user_model()
    made = 0
    for name, code in DEMO_PLAYERS:
        user, _ = User.objects.get_or_create(username=name)
        # A fresh row's password is "", which Django counts as usable yet nobody can log in
        # with: set the documented demo password then too. A password already set is kept.
        if not user.password or not user.has_usable_password():
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
        player, created = Player.objects.get_or_create(
            user=user, defaults={"name": name, "zone_id": zone_ids[code]}
        )
        if created:
            gold.credit(
                player_id=player.pk,
                amount=DEMO_GOLD,
                kind=GoldKind.OPENING,
                reference="demo-player",
            )
        made += created
    return made
