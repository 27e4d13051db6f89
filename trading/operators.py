"""The operators group: staff who may view (never change) every model of the project's
apps in the Django admin. Staff alone only opens the admin's index; what a staff user
sees there comes from permissions, and the mirror is read-only for everyone.

`sync_operators_group` is run by the data migration that creates the group and again
after every `migrate` (trading/apps.py), so a model added later is viewable too.
"""

from __future__ import annotations

from typing import Any

from django.apps import apps as global_apps
from django.contrib.auth.management import create_permissions
from django.db import DEFAULT_DB_ALIAS

OPERATORS_GROUP = "operators"
PROJECT_APPS = ("trading", "simfill", "reconcile_panel", "faults", "exchange_ui")


def sync_operators_group(apps: Any = global_apps, using: str = DEFAULT_DB_ALIAS) -> Any:
    """Create the operators group if missing and grant it the view permission of every
    model in PROJECT_APPS; idempotent. `apps` is the registry (a migration's historical
    one inside a migration)."""
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    models: list[Any] = []
    for label in PROJECT_APPS:
        try:
            app_config = apps.get_app_config(label)
        except LookupError:
            continue
        app_models = list(app_config.get_models())
        if not app_models:
            continue
        # Permissions are made by a post_migrate handler, after every migration has run:
        # inside a migration (a fresh database) they do not exist yet. Make them now.
        models_module = getattr(app_config, "models_module", None)  # a migration's stub has none
        app_config.models_module = models_module or True
        try:
            create_permissions(app_config, verbosity=0, using=using, apps=apps)
        finally:
            app_config.models_module = models_module
        models.extend(app_models)
    group, _ = Group.objects.using(using).get_or_create(name=OPERATORS_GROUP)
    types = ContentType.objects.db_manager(using).get_for_models(*models, for_concrete_models=False)
    views = Permission.objects.using(using).filter(
        content_type__in=list(types.values()), codename__startswith="view_"
    )
    group.permissions.add(*views)
    return group


def make_operator(user: Any) -> None:
    """Staff, and a member of the operators group (the demo operator, `create_api_token --staff`)."""
    if not user.is_staff:
        user.is_staff = True
        user.save(update_fields=["is_staff"])
    user.groups.add(sync_operators_group())


def sync_after_migrate(sender: Any, using: str = DEFAULT_DB_ALIAS, apps: Any = global_apps, **_: Any) -> None:
    sync_operators_group(apps=apps, using=using)
