"""URLs of the admin's People page (/people/...)."""

from django.urls import path

from labeling_app.views import people

app_name = "people"
urlpatterns = [
    path("", people.people_list, name="list"),
    path("new/", people.person_create, name="create"),
    path("<int:user_id>/invite/", people.person_invite, name="invite"),
    path("<int:user_id>/roles/", people.person_roles, name="roles"),
    path("<int:user_id>/active/", people.person_active, name="active"),
]
