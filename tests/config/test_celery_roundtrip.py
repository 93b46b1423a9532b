"""A task goes through the real Redis broker to a real worker and back."""

import pytest
from django.db import connection

from labeling_app.tasks import ping


@pytest.mark.django_db(transaction=True)
def test_ping_round_trips_through_the_broker(celery_worker):
    result = ping.apply_async(args=["hello"], queue=celery_worker.test_queue)
    reply = result.get(timeout=20)
    assert reply == {"echo": "hello", "database": connection.settings_dict["NAME"]}
