"""The Celery app a worker machine runs: Dagster's step task (``dagster_celery``) on the broker and
queue the environment names, the same settings the run process's executor uses.

    celery -A ops_platform.celery_app worker -n backups-1@%h --concurrency 1

is Dagster's documented way to run a worker with a custom app (``dagster-celery worker start -y``
would write the broker URL, password included, into a file under ``$DAGSTER_HOME``). The worker
listens on ``CELERY_QUEUE`` only, imports the code location (``ops_platform.definitions``) for each
step from the run's own code pointer, and reaches the run's instance through the reference the run
sends with the step, so it needs the instance's database (``DAGSTER_POSTGRES_URL``) and the
platform's settings (database URLs, AWS, Slack) in its environment, like the code server."""

from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Queue

from ops_platform.lib import celery_settings


def build_app():
    executor = CeleryExecutor(retries=RetryMode(RetryMode.DISABLED), broker=celery_settings.broker_url(),
                              backend=celery_settings.backend_url(),
                              config_source=celery_settings.celery_app_settings())
    celery = make_app(executor.app_args())
    celery.conf.task_queues = [Queue(celery_settings.queue_name())]
    return celery


app = build_app()
execute_plan = create_task(app)
