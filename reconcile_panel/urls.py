"""The reconcile panel's pages and partials, mounted at /reconcile/."""

from django.urls import path

from reconcile_panel import views

urlpatterns = [
    path("", views.reconcile_panel, name="reconcile-panel"),
    path("ledger/", views.ledger, name="reconcile-ledger"),
    path("conflicts.csv", views.conflicts_csv, name="reconcile-conflicts-csv"),
    path("adjustments.csv", views.adjustments_csv, name="reconcile-adjustments-csv"),
    path("check/", views.run_check, name="reconcile-check"),
    path("tapes/", views.tapes, name="reconcile-tapes"),
    path("mine/", views.my_adjustments, name="reconcile-mine"),
    path("marks/", views.reorg_marks, name="reconcile-marks"),
]
