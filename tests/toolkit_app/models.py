from django.conf import settings
from django.db import models

from nightstorm.models import VersionedModel


class Account(VersionedModel):
    """The simplest versioned row: a balance a test credits, races on and locks."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE
    )
    name = models.CharField(max_length=100)
    gold = models.BigIntegerField(default=0)
    xp = models.BigIntegerField(default=0)

    def __str__(self):
        return self.name
