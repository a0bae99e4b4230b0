"""``tierfaas up`` / ``tierfaas down``: a whole local cluster in one command.

N ``tierfaas node`` processes on loopback addresses (127.0.0.101, .102, ... by default), a
fresh cluster key, and a front door on 127.0.0.1:PORT, all owned by one supervisor process;
Ctrl-C (or ``tierfaas down``) drains the nodes and leaves nothing behind.

- ``options``: what to start (``UpOptions``) and where the nodes listen;
- ``supervisor``: the process that starts, follows and stops the cluster;
- ``detached``: ``--detach`` (the supervisor in the background) and ``down``;
- ``state``: the state folder and its ``cluster.json``, read by ``down`` and ``lb-config``;
- ``frontdoor``: the built-in L4 round-robin proxy (also ``tierfaas frontdoor``);
- ``nginx_config`` and ``nginx``: nginx's config (also ``tierfaas lb-config``) and process.
"""

from tierfaas.up.detached import detach, down
from tierfaas.up.options import UpOptions
from tierfaas.up.state import UpError, default_state_dir, read_state
from tierfaas.up.supervisor import run_up, say_to

__all__ = [
    "UpError",
    "UpOptions",
    "default_state_dir",
    "detach",
    "down",
    "read_state",
    "run_up",
    "say_to",
]
