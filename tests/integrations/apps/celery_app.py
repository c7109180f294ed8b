"""A Celery app on the filesystem transport (no broker server): its
messages live under $CELERY_DATA."""

import os
import time

import tbcollect.celery
from celery import Celery

data = os.environ["CELERY_DATA"]
app = Celery("celery_app", broker="filesystem://")
app.conf.update(
    broker_transport_options={
        "data_folder_in": os.path.join(data, "queue"),
        "data_folder_out": os.path.join(data, "queue"),
        "processed_folder": os.path.join(data, "processed"),
        "store_processed": False,
    },
    broker_connection_retry_on_startup=True,
    task_ignore_result=True,
    worker_hijack_root_logger=False,
)
tbcollect.celery.setup(app)


@app.task
def slow_task(seconds):
    print(f"slow_task running in {os.getpid()}", flush=True)
    time.sleep(seconds)


@app.task(soft_time_limit=1)
def soft_limited(seconds):
    print(f"soft_limited running in {os.getpid()}", flush=True)
    time.sleep(seconds)
