"""Print a new API token for a user: `create_api_token USERNAME [--staff] [--create]`."""

from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from trading.models import ApiToken
from trading.operators import make_operator


class Command(BaseCommand):
    help = "Issue a bearer token for the JSON API and /ws/events/; prints it once."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="make the user staff (operator)")
        parser.add_argument("--create", action="store_true", help="create the user if missing")

    def handle(self, *args: Any, **options: Any) -> None:
        users = get_user_model()
        username = options["username"].strip()
        if not username or len(username) > 150:
            raise CommandError("USERNAME must be 1-150 characters")
        user = users.objects.filter(username=username).first()
        if user is None:
            if not options["create"]:
                raise CommandError(f"no user {username!r}; pass --create to create it")
            user = users.objects.create_user(username=username, password=secrets.token_urlsafe(16))
        if options["staff"]:
            make_operator(user)  # staff, and the operators group: admin shows every mirrored model
        self.stdout.write(ApiToken.issue(user))
