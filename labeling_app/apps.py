"""App config for the labeling app."""

from django.apps import AppConfig


class LabelingAppConfig(AppConfig):
    name = "labeling_app"
    verbose_name = "Labeling"
