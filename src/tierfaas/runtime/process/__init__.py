"""Code that runs outside the node's process: the zygote (``zygote.py``, started with
``python -m tierfaas.runtime.process.zygote FD``) and the instance processes it forks
(``child.py``). They speak to the node only through the frames of ``runtime/protocol.py``;
what runs in the node (the pools, the zygote client) is never called from here.
"""
