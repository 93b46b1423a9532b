"""URLs of the researcher pages (/projects/...)."""
from django.urls import path

from labeling_app.views import researcher

app_name = "researcher"
urlpatterns = [
    path("", researcher.project_list, name="project_list"),
]
