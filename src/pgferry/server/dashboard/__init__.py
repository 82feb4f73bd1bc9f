"""The dashboard (issue 15): server-rendered pages over the admin service, at ``/``.

Contract: :data:`router` is mounted by :func:`pgferry.server.app.create_app` beside the
API. Pages are jinja2 templates (``pgferry/server/templates``) with one small script
(``pgferry/server/static/dashboard.js``: live progress from the API's own SSE stream)
and no build step. The same tokens and roles as the API, as a session cookie made at
``/login`` (:mod:`.session`); CSRF on every form. The pages read and act through the
functions the API calls (:mod:`.views`, :mod:`.routes`); the pictures are SVG drawn on
the server (:mod:`.charts`). docs/dashboard.md shows every page.
"""

from pgferry.server.dashboard.routes import router

__all__ = ["router"]
