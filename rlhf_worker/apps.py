"""App config for the RLHF worker app."""

from django.apps import AppConfig


class RlhfWorkerConfig(AppConfig):
    name = "rlhf_worker"
    verbose_name = "RLHF training"
