"""The read path: run a request where its function is warm, without loops or lost requests.

``decision`` is the pure router core, ``cache`` the local route cache, ``forwarding`` the
authenticated hop headers; ``router`` wires them to the runtime, the control plane and HTTP.
"""
