"""Secrets: small values (passwords, tokens) kept encrypted where the registry lives and given
only to the functions that list them (``secrets = ["db"]`` in the manifest).

- ``crypto``: AES-256-GCM under a sub-key of the cluster key, name and version bound in;
- ``store``: ``registry/secrets/NAME/VERSION`` files, written atomically, versions immutable;
- ``delivery``: a node's private copy of its functions' current values (a 0700 folder on a
  tmpfs), refreshed by polling the store, read by instances as files;
- ``redact``: replaces every delivered value with ``***`` in text instances produce;
- ``cli``: ``tierfaas secret create|list|rm``.

The threat model is in docs/security.md, *Secrets*.
"""
