"""URLs of the training dashboard (/jobs/...)."""
from django.urls import path

from rlhf_worker import views

app_name = "jobs"
urlpatterns = [
    path("", views.job_list, name="list"),
]
