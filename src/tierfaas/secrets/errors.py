"""The errors of secrets: each names the secret, never shows a byte of its value."""

from __future__ import annotations

from tierfaas.errors import TierfaasError


class SecretError(TierfaasError):
    """A secret operation was refused; the message says why (and never holds the value)."""


class BadSecretName(SecretError, ValueError):
    def __init__(self, name: str) -> None:
        shown = repr(name) if len(name) <= 80 else repr(name[:77]) + "..."
        super().__init__(
            f"{shown} is not a secret name: 1-64 ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )


class SecretTooLarge(SecretError, ValueError):
    def __init__(self, name: str, size: int, limit: int) -> None:
        super().__init__(
            f"secret {name!r} is over the limit of {limit} bytes ({limit // 1024} KiB)"
        )
        self.size = size


class EmptySecret(SecretError, ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"secret {name!r} is empty: give it a value (stdin or --from-file)")


class UnknownSecret(SecretError, LookupError):
    def __init__(self, name: str, where: str) -> None:
        super().__init__(f"no secret {name!r} in {where}")


class SecretUnreadable(SecretError):
    """A stored version does not open: another cluster key, or the file was changed."""

    def __init__(self, name: str, version: int, reason: str) -> None:
        super().__init__(f"secret {name!r} version {version}: {reason}")


class WrongKey(SecretError):
    """The key given is not the one the registry's secrets are sealed with."""

    def __init__(self, where: str, detail: str) -> None:
        super().__init__(
            f"the secrets in {where} are sealed with another cluster key ({detail}); use the "
            "cluster's key (--key-file or $TIERFAAS_CLUSTER_KEY)"
        )
