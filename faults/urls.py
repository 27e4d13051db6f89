"""The experiment panel's pages, mounted at /experiments/."""

from django.urls import path

from faults import views

urlpatterns = [
    path("", views.experiment_panel, name="experiments"),
    path("partials/live/", views.panel_snapshot, name="experiments-snapshot"),
    path("stop-all/", views.stop_all, name="experiments-stop-all"),
    path("templates/<slug:template_id>/preview/", views.preview, name="experiments-preview"),
    path("templates/<slug:template_id>/start/", views.start, name="experiments-start"),
    path("<slug:experiment_id>/stop/", views.stop, name="experiments-stop"),
]
