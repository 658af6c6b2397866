"""The Celery app: at-least-once delivery made exactly-once in effect by idempotent writes.

- acks_late + reject_on_worker_lost: a task is acknowledged only after its verdicts are stored,
  and a task whose worker died goes back to the queue.
- A short visibility timeout and restore interval: unacknowledged tasks of a dead worker are
  redelivered within about half a minute, not kombu's default hour.
- prefetch multiplier 1: a worker reserves no more than it runs.
- Queue lanes (worker.lanes): a job's batches go to its owner's lane and workers take from the
  lanes in turn; worker.batches caps a tenant's share of a worker while others wait, stops the
  batches of cancelled jobs, and hands running batches back to the queue on shutdown.

Importing this module (or worker.tasks) starts nothing and connects to nothing: the broker (REDIS_URL,
else the embedded Redis, which resolving it starts) and the settings are read when the app's
configuration is first used, by the first task sent or by the worker starting.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

QUEUE = "pjudge"


def create_app(broker: str | None = None) -> Celery:
    """A Celery app of the service; `broker` overrides the configured one (tests)."""
    app = Celery("pjudge", include=["worker.tasks", "worker.webhooks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=20,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )

    def configure(sender: Celery, **_: Any) -> None:
        # Celery sends this once, when a setting is first read: before that, nothing is resolved.
        from judge.settings import settings
        from worker.broker import broker_url

        sender.conf.update(
            broker_url=broker or broker_url(),
            broker_transport_options={
                "visibility_timeout": settings().visibility_timeout,
                "unacked_restore_interval": 2,
                "unacked_restore_throttle": 1,
            },
        )

    app.on_configure.connect(configure, sender=app, weak=False)
    return app


app = create_app()
