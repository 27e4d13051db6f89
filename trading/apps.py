from django.apps import AppConfig
from django.db.models.signals import post_migrate


class TradingConfig(AppConfig):
    name = "trading"
    verbose_name = "Trading (mirror of the DynamoDB tables)"

    def ready(self) -> None:
        from trading.operators import sync_after_migrate

        post_migrate.connect(sync_after_migrate, sender=self, dispatch_uid="trading-sync-operators-group")
