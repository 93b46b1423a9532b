"""URLs of the labeler pages (/label/...)."""

from django.urls import path

from labeling_app.views import labeler, review

app_name = "labeler"
urlpatterns = [
    path("", labeler.home, name="home"),
    path("projects/<int:project_id>/next/", labeler.next_task, name="next"),
    path("tasks/<int:task_id>/", labeler.task, name="task"),
    path("mine/", review.my_labels, name="my_labels"),
    path("mine/<int:task_id>/", review.my_label, name="my_label"),
    path("mine/<int:task_id>/revise/", review.label_revise, name="label_revise"),
]
