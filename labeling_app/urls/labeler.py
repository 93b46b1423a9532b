"""URLs of the labeler pages (/label/...)."""
from django.urls import path

from labeling_app.views import labeler

app_name = "labeler"
urlpatterns = [
    path("", labeler.home, name="home"),
    path("projects/<int:project_id>/next/", labeler.next_task, name="next"),
    path("tasks/<int:task_id>/", labeler.task, name="task"),
]
