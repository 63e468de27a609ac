"""The retry queue: exactly-once application, backoff, dead jobs and manual retry."""

import contextlib
import threading

import pytest
from django.db import transaction
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


def naive_run_job(job_id: int, *, everyone_read: threading.Barrier) -> str | None:
    """`run_job` without its guard: the job is read without a lock (no SKIP LOCKED) and its
    state is not checked again where it is marked done. Every runner reads the job before any
    runs it (the barrier holds that window open)."""
    job = OutboxJob.objects.get(pk=job_id)
    if job.state != OutboxJob.State.PENDING:
        return None
    with contextlib.suppress(threading.BrokenBarrierError):
        everyone_read.wait()
    with transaction.atomic():
        outbox._handlers[job.kind](job.payload)
        OutboxJob.objects.filter(pk=job_id).update(
            state=OutboxJob.State.DONE, attempts=1, done_at=timezone.now()
        )
    return OutboxJob.State.DONE


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_eight_runners_of_one_job_apply_it_once():
    account = make_account()
    job = enqueue_credit(account, amount=5)
    outcomes = race(outbox.run_job, [(job.pk,)] * 8)
    assert outcomes.count("done") == 1 and outcomes.count(None) == 7, outcomes
    assert gold(account) == 5


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_control_runners_without_the_row_lock_apply_one_job_once_each():
    """The control: the same eight runners, unguarded, credit the account eight times."""
    account = make_account()
    job = enqueue_credit(account, amount=5)
    everyone_read = threading.Barrier(8, timeout=10)
    outcomes = race(lambda pk: naive_run_job(pk, everyone_read=everyone_read), [(job.pk,)] * 8)
    assert outcomes == ["done"] * 8, outcomes
    assert gold(account) == 5 * 8


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


def queued_jobs() -> list[int]:
    """The job ids handed to the task queue (django-q2's ORM broker), in order."""
    from django_q.models import OrmQ

    return [q.task["args"][0] for q in OrmQ.objects.order_by("id")]


@pytest.mark.django_db
def test_a_job_is_handed_to_the_queue_only_after_its_transaction_commits(
    django_capture_on_commit_callbacks,
):
    from django.db import transaction

    account = make_account()
    with django_capture_on_commit_callbacks() as callbacks, transaction.atomic():
        job = outbox.enqueue("tests.credit", {"account": str(account.pk), "amount": 1})
        assert queued_jobs() == []  # not while the cause can still roll back
    assert queued_jobs() == []  # the test's own transaction has not committed either
    assert len(callbacks) == 1
    callbacks[0]()  # what the commit runs
    assert queued_jobs() == [job.pk]


@pytest.mark.django_db
def test_a_job_rolled_back_with_its_cause_is_never_handed_to_the_queue(
    django_capture_on_commit_callbacks,
):
    from django.db import transaction

    account = make_account()
    items = [({"account": str(account.pk), "amount": n}, f"k{n}") for n in (1, 2)]
    with django_capture_on_commit_callbacks(execute=True) as callbacks, transaction.atomic():
        outbox.enqueue("tests.credit", {"account": str(account.pk), "amount": 1})
        outbox.enqueue_many("tests.credit", items)
        transaction.set_rollback(True)
    assert callbacks == []
    assert queued_jobs() == []
    assert not OutboxJob.objects.exists()


@pytest.mark.django_db
def test_enqueue_many_and_retry_now_hand_each_job_over_after_the_commit(
    django_capture_on_commit_callbacks,
):
    from django.db import transaction

    account = make_account()
    items = [({"account": str(account.pk), "amount": n}, f"k{n}") for n in (1, 2, 3)]
    with django_capture_on_commit_callbacks(execute=True), transaction.atomic():
        jobs = outbox.enqueue_many("tests.credit", items)
        assert queued_jobs() == []
    ids = sorted(job.pk for job in jobs.values())
    assert sorted(queued_jobs()) == ids
    OutboxJob.objects.filter(pk=ids[0]).update(state="dead")
    with django_capture_on_commit_callbacks(execute=True):
        assert outbox.retry_now([ids[0]]) == 1
    assert queued_jobs()[-1] == ids[0]


def broker_away(*args, **kwargs):
    raise ConnectionError("the task broker is away")


@pytest.mark.django_db(transaction=True)
def test_a_broker_error_after_the_commit_is_logged_and_the_job_waits_for_the_drain(
    monkeypatch, caplog
):
    """The hand-over runs after the commit, for real here: the cause and its job stay
    committed, nothing raises to the caller, and drain_outbox runs the job."""
    import django_q.tasks

    monkeypatch.setattr(django_q.tasks, "async_task", broker_away)
    account = make_account()
    with caplog.at_level("ERROR", logger="django.db.backends.base"):
        job = enqueue_credit(account, amount=3)
    assert "dispatch_outbox_job" in caplog.text and "broker is away" in caplog.text
    assert OutboxJob.objects.get(pk=job.pk).state == "pending"
    assert outbox.drain() == {"done": 1, "pending": 0, "dead": 0, "skipped": 0}
    assert gold(account) == 3


@pytest.mark.django_db(transaction=True)
def test_a_broker_error_after_the_commit_is_not_a_500(monkeypatch, client, django_user_model):
    """A request whose transaction committed answers as such even when the queue is away
    (here the admin's "retry now", which requeues a dead job)."""
    import django_q.tasks

    admin = django_user_model.objects.create_superuser("boss", "boss@example.com", "pw")
    client.force_login(admin)
    job = OutboxJob.objects.create(kind="tests.credit", state="dead", attempts=6)
    monkeypatch.setattr(django_q.tasks, "async_task", broker_away)
    response = client.post(
        "/admin/nightstorm/outboxjob/", {"action": "retry_now", "_selected_action": [job.pk]}
    )
    assert response.status_code == 302
    job.refresh_from_db()
    assert (job.state, job.attempts) == ("pending", 0)
