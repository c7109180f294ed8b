"""Flask under gunicorn: /ping, /slow?SECONDS, and the dump endpoint at
/debug/stacks; every request labelled."""

import time

import tbcollect.web
from flask import Flask, request

flask_app = Flask(__name__)


@flask_app.get("/ping")
def ping():
    return "ok\n"


@flask_app.get("/slow")
def slow_request():
    time.sleep(float(request.query_string or 60))
    return "slow\n"


app = tbcollect.web.mount(
    tbcollect.web.label_requests(flask_app), "/debug/stacks", tbcollect.web.wsgi()
)
