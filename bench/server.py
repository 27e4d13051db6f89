"""The exchange as the bench starts it: the shared dev-server harness on bench.settings,
against the run's moto, with the per-user caps lifted."""

from __future__ import annotations

from exchange_ui.devserver import DevServer, running

__all__ = ["Server", "running"]


class Server(DevServer):
    """`manage.py run_exchange` (or daphne on another app) in a child process with its own var dir."""

    def __init__(
        self,
        endpoint: str,
        redis_url: str | None = None,
        synthetic_rate: str = "0",
        app: str | None = None,
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ):
        super().__init__(
            args=args,
            app=app,
            settings="bench.settings",
            synthetic_rate=synthetic_rate,
            env={
                "AWS_ENDPOINT_URL": endpoint,
                "PYTHONUNBUFFERED": "1",
                # One token plays the 200 fan-out clients, and ingest measures the server's own
                # capacity: the per-user socket cap and order rate would measure themselves.
                "EXCHANGE_USER_SOCKETS": "1000",
                "EXCHANGE_USER_ORDER_RATE": "0",
                **(env or {}),
                **({"REDIS_URL": redis_url} if redis_url else {}),
            },
            unset=() if redis_url else ("REDIS_URL",),
            var_prefix="exchange-bench-",
            manage_timeout_s=180,
        )

    def personas(self) -> dict[str, str]:
        """The trader's and the operator's tokens and the browser viewer's login, in one start-up."""
        code = (
            "from django.contrib.auth.models import User; from trading.models import ApiToken; "
            "t = User.objects.create_user('bench-trader', password='x'); "
            "o = User.objects.create_user('bench-ops', password='x', is_staff=True); "
            "User.objects.create_user('bench-viewer', password='bench-pass-123'); "
            "print(ApiToken.issue(t)); print(ApiToken.issue(o))"
        )
        trader, staff = self.manage("shell", "-c", code).strip().splitlines()[-2:]
        return {"trader": trader.strip(), "staff": staff.strip()}
