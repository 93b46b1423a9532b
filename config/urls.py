"""Top-level URLs: one include per area, each area checks its role in its views."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from config import health, metrics
from labeling_app.views import people
from labeling_app.views.auth import landing

urlpatterns = [
    path("", landing, name="landing"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/set-password/<uidb64>/<token>/", people.SetPasswordView.as_view(), name="set_password"),
    path("accounts/profile/", people.profile, name="profile"),
    path("accounts/profile/token/", people.profile_token_create, name="profile_token_create"),
    path("accounts/profile/token/revoke/", people.profile_token_revoke, name="profile_token_revoke"),
    path("people/", include("labeling_app.urls.people")),
    path("label/", include("labeling_app.urls.labeler")),
    path("projects/", include("labeling_app.urls.researcher")),
    path("jobs/", include("rlhf_worker.urls")),
    path("api/", include("labeling_app.api.urls")),
    path("django-admin/", admin.site.urls),
    # No login: compose healthchecks and load balancers call these (config/health.py).
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # Prometheus: an admin session or METRICS_TOKEN (config/metrics.py).
    path("metrics", metrics.metrics, name="metrics"),
]
