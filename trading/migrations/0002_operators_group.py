"""The operators group with the view permission of every mirrored model; staff users
that exist already join it."""

from django.db import migrations

from trading.operators import OPERATORS_GROUP, sync_operators_group


def create_operators_group(apps, schema_editor):
    using = schema_editor.connection.alias
    group = sync_operators_group(apps=apps, using=using)
    User = apps.get_model("auth", "User")
    group.user_set.add(*User.objects.using(using).filter(is_staff=True))


def remove_operators_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.using(schema_editor.connection.alias).filter(name=OPERATORS_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("trading", "0001_initial"),
    ]

    operations = [migrations.RunPython(create_operators_group, remove_operators_group)]
