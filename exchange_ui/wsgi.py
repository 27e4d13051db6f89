"""WSGI entry point (the Lambda facade under Zappa serves the same Django views)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange_ui.settings")
application = get_wsgi_application()
