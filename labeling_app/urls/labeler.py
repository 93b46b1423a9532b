"""URLs of the labeler pages (/label/...)."""
from django.urls import path

from labeling_app.views import labeler

app_name = "labeler"
urlpatterns = [
    path("", labeler.home, name="home"),
]
