"""The Celery app: at-least-once delivery made exactly-once in effect by idempotent writes.

- acks_late + reject_on_worker_lost: a task is acknowledged only after its verdicts are stored,
  and a task whose worker died goes back to the queue.
- A short visibility timeout and restore interval: unacknowledged tasks of a dead worker are
  redelivered within about half a minute, not kombu's default hour.
- prefetch multiplier 1: a worker reserves no more than it runs.
- Queue lanes (worker.lanes): a job's batches go to its owner's lane and workers take from the
  lanes in turn; worker.batches caps a tenant's share of a worker while others wait, stops the
  batches of cancelled jobs, and hands running batches back to the queue on shutdown.
"""

from __future__ import annotations

import os

from celery import Celery

from worker.broker import broker_url

QUEUE = "pjudge"
VISIBILITY_TIMEOUT_S = int(os.environ.get("PJUDGE_VISIBILITY_TIMEOUT", "30"))


def create_app() -> Celery:
    app = Celery("pjudge", broker=broker_url(), include=["worker.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=QUEUE,
        broker_transport_options={
            "visibility_timeout": VISIBILITY_TIMEOUT_S,
            "unacked_restore_interval": 2,
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_pool_limit=20,
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=False,
    )
    return app


app = create_app()
