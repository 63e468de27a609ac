"""The retry queue: exactly-once application, backoff, dead jobs and manual retry."""

import pytest
from django.db.models import F
from django.utils import timezone

from nightstorm import outbox
from nightstorm.models import OutboxJob
from tests.helpers import race
from tests.nightstorm.factories import make_account
from tests.toolkit_app.models import Account


class Boom(Exception):
    pass


@outbox.handler("tests.credit")
def credit(payload):
    Account.objects.filter(pk=payload["account"]).update(gold=F("gold") + payload["amount"])
    if payload.get("crash_after_credit"):
        raise Boom("worker died after crediting")


def enqueue_credit(account, amount=10, **extra):
    from django.db import transaction

    with transaction.atomic():
        return outbox.enqueue(
            "tests.credit", {"account": str(account.pk), "amount": amount, **extra}
        )


def gold(account):
    return Account.objects.get(pk=account.pk).gold


@pytest.mark.django_db
def test_a_job_runs_once_even_when_its_task_is_delivered_twice():
    account = make_account()
    job = enqueue_credit(account)
    assert outbox.run_job(job.pk) == "done"
    assert outbox.run_job(job.pk) is None
    assert gold(account) == 10


@pytest.mark.django_db
def test_a_crash_halfway_rolls_the_effect_back_and_the_job_stays_pending(settings):
    settings.NIGHTSTORM_OUTBOX_BASE_DELAY_S = 0
    account = make_account()
    job = enqueue_credit(account, crash_after_credit=True)
    assert outbox.run_job(job.pk) == "pending"
    assert gold(account) == 0
    job.refresh_from_db()
    assert job.attempts == 1
    assert "worker died" in job.last_error
    # The cause is fixed; the next run pays exactly once.
    OutboxJob.objects.filter(pk=job.pk).update(payload={"account": str(account.pk), "amount": 10})
    assert outbox.run_job(job.pk) == "done"
    assert gold(account) == 10


@pytest.mark.django_db
def test_failures_back_off_then_the_job_is_dead_until_retried(settings):
    account = make_account()
    job = enqueue_credit(account, crash_after_credit=True)
    OutboxJob.objects.filter(pk=job.pk).update(max_attempts=2)
    assert outbox.run_job(job.pk) == "pending"
    job.refresh_from_db()
    assert job.run_after > timezone.now()
    assert outbox.run_job(job.pk) is None  # not due yet
    OutboxJob.objects.filter(pk=job.pk).update(run_after=timezone.now())
    assert outbox.run_job(job.pk) == "dead"
    assert outbox.drain() == {"done": 0, "pending": 0, "dead": 0, "skipped": 0}
    assert outbox.retry_now([job.pk]) == 1
    job.refresh_from_db()
    assert (job.state, job.attempts) == ("pending", 0)
    assert gold(account) == 0


@pytest.mark.django_db
def test_dedupe_key_records_one_job():
    from django.db import transaction

    account = make_account()
    with transaction.atomic():
        a = outbox.enqueue(
            "tests.credit", {"account": str(account.pk), "amount": 1}, dedupe_key="k"
        )
        b = outbox.enqueue(
            "tests.credit", {"account": str(account.pk), "amount": 1}, dedupe_key="k"
        )
    assert a.pk == b.pk
    assert OutboxJob.objects.count() == 1


@pytest.mark.django_db
def test_a_job_rolled_back_with_its_cause_never_runs():
    from django.db import transaction

    account = make_account()
    with transaction.atomic():
        outbox.enqueue("tests.credit", {"account": str(account.pk), "amount": 1})
        transaction.set_rollback(True)
    assert not OutboxJob.objects.exists()


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError):
        outbox.enqueue("tests.nobody-handles-this", {})


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_runners_racing_on_the_same_jobs_apply_each_once():
    account = make_account()
    jobs = [enqueue_credit(account, amount=1) for _ in range(20)]
    ids = [job.pk for job in jobs]

    def runner(_):
        return [outbox.run_job(pk) for pk in ids]

    race(runner, [(i,) for i in range(4)])
    race(runner, [(i,) for i in range(4)])  # second pass: anything skipped-while-locked
    assert gold(account) == 20
    assert set(OutboxJob.objects.values_list("state", flat=True)) == {"done"}


@pytest.mark.django_db
def test_enqueue_many_records_each_key_once_and_runs_each_job_once():
    from django.db import transaction

    account = make_account()
    items = [({"account": str(account.pk), "amount": n}, f"many:{n}") for n in (1, 2, 3)]
    with transaction.atomic():
        first = outbox.enqueue_many("tests.credit", items)
        again = outbox.enqueue_many("tests.credit", items)
    assert {k: j.pk for k, j in first.items()} == {k: j.pk for k, j in again.items()}
    assert OutboxJob.objects.count() == 3
    for job in first.values():
        outbox.run_job(job.pk)
        outbox.run_job(job.pk)
    assert gold(account) == 6
