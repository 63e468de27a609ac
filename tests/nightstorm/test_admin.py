"""Admin: stale saves of versioned rows are refused; dead outbox jobs can be retried."""

import pytest
from django.db import transaction
from django.forms import modelform_factory

from nightstorm.admin import VersionedAdminForm
from nightstorm.models import OutboxJob
from nightstorm.optimistic import update_versioned
from tests.nightstorm.factories import make_account
from tests.toolkit_app.models import Account

pytestmark = pytest.mark.django_db

AccountForm = modelform_factory(
    Account, form=VersionedAdminForm, fields=["name", "gold", "expected_version"]
)


def test_a_save_over_a_newer_version_is_a_form_error_and_changes_nothing():
    account = make_account(gold=10)
    opened = AccountForm(instance=account)
    assert opened.fields["expected_version"].initial == 1
    update_versioned(Account, account.pk, 1, gold=99)  # someone else saves first

    form = AccountForm(
        data={"name": account.name, "gold": 5, "expected_version": 1}, instance=account
    )
    with transaction.atomic():
        assert not form.is_valid()
    assert "now version 2" in str(form.errors)
    account.refresh_from_db()
    assert (account.gold, account.version) == (99, 2)


def test_a_save_of_the_current_version_bumps_it():
    account = make_account(gold=10)
    form = AccountForm(
        data={"name": account.name, "gold": 5, "expected_version": 1}, instance=account
    )
    with transaction.atomic():
        assert form.is_valid(), form.errors
        form.save()
    account.refresh_from_db()
    assert (account.gold, account.version) == (5, 2)


def test_the_outbox_admin_retries_dead_jobs(admin_client):
    job = OutboxJob.objects.create(kind="tests.credit", state="dead", attempts=6, last_error="x")
    response = admin_client.post(
        "/admin/nightstorm/outboxjob/",
        {"action": "retry_now", "_selected_action": [job.pk]},
        follow=True,
    )
    assert response.status_code == 200
    job.refresh_from_db()
    assert (job.state, job.attempts) == ("pending", 0)


def test_the_outbox_admin_lists_jobs_by_state(admin_client):
    OutboxJob.objects.create(kind="tests.credit", state="dead", last_error="boom")
    response = admin_client.get("/admin/nightstorm/outboxjob/?state__exact=dead")
    assert response.status_code == 200
    assert b"boom" in response.content
