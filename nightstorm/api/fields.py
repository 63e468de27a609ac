"""Serializer fields that accept exactly what the schema says.

DRF's `CharField` turns a JSON number into text (`{"username": 0}` becomes "0"), while the
schema promises `type: string`; these refuse anything but a string (400 `invalid`, "Not a
valid string."), so a client generated from the schema and a hand-written one meet the same
contract.
"""

from rest_framework import serializers


class _StringOnly:
    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class CharField(_StringOnly, serializers.CharField):
    pass


class RegexField(_StringOnly, serializers.RegexField):
    pass


class IPAddressField(_StringOnly, serializers.IPAddressField):
    pass
