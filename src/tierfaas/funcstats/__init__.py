"""Per-function call statistics of one node: counts since the node started, the rate and p99
of the last minute, and the most recent errors (``GET /v1/functions``, ``/v1/functions/NAME``,
``tierfaas functions`` and ``tierfaas describe``)."""
