"""Asynchronous calls (issue 20): accepted durably on two nodes, run at least once, recorded
once. ``model`` (the call), ``ids``, ``logstore`` (the node's store: an append-only log,
group-written per loop turn; ``store``, SQLite WAL, reads an older node's calls.db),
``replication`` (the second copy, keyed homes, outcomes), ``takeover`` (a holder runs a gone
origin's calls; the restart claim), ``dispatcher`` (which call runs when), ``service`` (the
facade the HTTP routes and the control server use), ``api`` (the HTTP routes)."""
