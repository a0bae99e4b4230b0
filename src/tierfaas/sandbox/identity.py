"""Who a release's processes are: the uid/gid of its zygote and of each function's instances.

A release's zygote lives in its own user namespace. When the node is root, the namespace maps a
range of host ids, ``[base, base + count)``, to ``[0, count)`` inside: the zygote is uid 0 in
there (host uid ``base``, with no power outside), and each function's instances run as their
own uid ``1 + i`` (host ``base + 1 + i``), ``i`` the function's place in the sorted names, so
two functions of a release never share an identity. A node that is not root can map only its
own uid (the kernel's rule for unprivileged namespaces): every process of the release is then
uid 0 inside, the node's uid outside, and the namespaces and empty capability sets are what
separate them (docs/security.md says what that leaves).
"""

from __future__ import annotations

from dataclasses import dataclass


class IdentityError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Identities:
    uid_map: str  # the text written to /proc/<pid>/uid_map (and gid_map): "inside outside count"
    zygote: int  # the zygote's uid and gid inside the namespace
    functions: dict[str, int]  # each function's uid and gid inside the namespace

    def of(self, function: str) -> int:
        return self.functions[function]


def assign(functions: list[str] | set[str], *, node_uid: int, base: int, count: int) -> Identities:
    """The identities of a release's processes (see the module docstring)."""
    names = sorted(functions)
    if node_uid != 0:
        return Identities(f"0 {node_uid} 1\n", 0, {name: 0 for name in names})
    if base <= 0 or count < 2:
        raise IdentityError(f"the uid range {base}+{count} must start above 0 and hold 2 ids")
    if len(names) + 1 > count:
        raise IdentityError(
            f"the release has {len(names)} functions but the uid range {base}+{count} holds "
            f"ids for {count - 1}: raise --sandbox-uid-count"
        )
    if base + count > 2**32 - 1:
        raise IdentityError(f"the uid range {base}+{count} goes past the largest uid")
    return Identities(f"0 {base} {count}\n", 0, {name: 1 + i for i, name in enumerate(names)})
