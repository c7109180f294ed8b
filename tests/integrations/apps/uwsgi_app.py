"""The uWSGI recipe of docs/integrations.md, as a test app: the WSGI app of
the gunicorn tests, with tbcollect installed in every worker after the fork."""

import signal

import tbcollect
import uwsgi
from uwsgidecorators import postfork
from wsgiapp import app

__all__ = ["app"]


def install_tbcollect():
    # SIGURG: uWSGI acts on HUP, TERM, INT, QUIT, USR1, USR2, TSTP and WINCH.
    tbcollect.install(signal.SIGURG)


if uwsgi.worker_id() > 0:
    install_tbcollect()  # --lazy-apps: this module loads in the worker, after the fork
else:
    postfork(install_tbcollect)  # loaded in the master: in each worker once forked
