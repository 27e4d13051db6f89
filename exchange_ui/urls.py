"""URL routes: the pages, the JSON API, admin."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView

from exchange_ui import views
from exchange_ui.api import api

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("partials/live/", views.live_snapshot, name="live-snapshot"),
    path("orders/submit/", views.submit_order_form, name="submit-order"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("experiments/", include("faults.urls")),
    path("reconcile/", include("reconcile_panel.urls")),
    path("admin/", admin.site.urls),
    path("api/", api.urls),
    # Browsers ask for /favicon.ico on every page that names no icon (admin, JSON).
    path("favicon.ico", RedirectView.as_view(url=static("favicon.svg"), permanent=True)),
]
