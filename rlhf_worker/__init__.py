"""RLHF worker: training jobs, model versions, and the Celery tasks that run torch training code."""
