"""What functions print, kept and served: ``tierfaas logs`` and ``GET /v1/logs``.

``line`` (one log line and its JSON form), ``since`` (the ``since`` filter), ``store`` (the
per-function memory ring and rotated files on each node), ``api`` (the HTTP route, follow
included), ``merge`` (every node's lines in time order) and ``client`` (the command line's
side: ask every node, merge, print).
"""
