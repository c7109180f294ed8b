"""Django under gunicorn, in one module: /ping, /slow?SECONDS, and the dump
endpoint at /debug/stacks; every request labelled."""

import time

from django.conf import settings

settings.configure(
    DEBUG=False,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    SECRET_KEY="tbcollect-test-only",
    MIDDLEWARE=[],
    INSTALLED_APPS=[],
)

import tbcollect.web  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import HttpResponse  # noqa: E402
from django.urls import path  # noqa: E402


def ping(request):
    return HttpResponse("ok\n")


def slow_request(request):
    time.sleep(float(request.META.get("QUERY_STRING") or 60))
    return HttpResponse("slow\n")


urlpatterns = [path("ping", ping), path("slow", slow_request)]

app = tbcollect.web.mount(
    tbcollect.web.label_requests(get_wsgi_application()), "/debug/stacks", tbcollect.web.wsgi()
)
