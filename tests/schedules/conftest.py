import pytest
from django.core.management import call_command


@pytest.fixture
def world(db):
    call_command("seed_world", verbosity=0)
