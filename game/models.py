"""The game world: zones and players. (Combats, events and rewards build on these.)"""

from django.conf import settings
from django.db import models
from django.db.models import Q

from nightstorm.models import VersionedModel


class Zone(models.Model):
    """One of the 81 zones of the world. Seeded by `manage.py seed_world`; codes are stable."""

    code = models.CharField(max_length=8, unique=True)
    name = models.CharField(max_length=100)
    region = models.CharField(max_length=50)

    class Meta:
        ordering = ["code"]

    def __str__(self):
        return f"{self.code} {self.name}"


class Player(VersionedModel):
    """A user's character. Gold is an integer amount of minor units and never negative."""

    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="player")
    name = models.CharField(max_length=150, unique=True)
    zone = models.ForeignKey(Zone, on_delete=models.PROTECT, related_name="players", null=True, blank=True)
    gold = models.BigIntegerField(default=0)
    hp = models.PositiveIntegerField(default=100)
    level = models.PositiveIntegerField(default=1)
    xp = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(gold__gte=0),
                name="%(app_label)s_%(class)s_gold_not_negative",
                violation_error_message="Gold cannot be negative.",
            ),
            models.CheckConstraint(
                condition=Q(xp__gte=0),
                name="%(app_label)s_%(class)s_xp_not_negative",
                violation_error_message="Experience cannot be negative.",
            ),
        ]

    def __str__(self):
        return self.name
