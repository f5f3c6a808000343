"""The library's exceptions: one root class, subclasses by concern.

Every error names what is wrong (a field path such as ``blocks[2].stride``, a file, a key) and,
where it helps, what to do instead. The service maps these to HTTP problem responses and the CLI to
one line on stderr and the class's ``exit_code``: 2 for bad input (the default), 1 for a runtime
failure (:class:`RunFailure`: a cluster that cannot be reached, workers that cannot start); the
library itself never knows about either.
"""

from __future__ import annotations


class ZenNASError(Exception):
    """Root of every error zennas raises on purpose."""

    exit_code = 2  # the CLI's exit status: bad input

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field  # dotted/indexed path of the offending input, when there is one


class StructureError(ZenNASError, ValueError):
    """A backbone structure is malformed (bad field, broken channel chain, unknown block type)."""


class FormatError(StructureError):
    """A structure file or string could not be parsed in any supported format."""


class SpaceError(ZenNASError, ValueError):
    """A search-space document is invalid (unknown key, bad value) or unknown by name."""


class SpecError(ZenNASError, ValueError):
    """A search or score specification is invalid (out-of-range value, unmeetable budget)."""


class ScoreError(ZenNASError, ValueError):
    """A score cannot be computed for this structure with these settings."""


class NotFoundError(ZenNASError, KeyError):
    """Something named by the user (a stored search, a file's entry) does not exist."""

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class RunFailure(ZenNASError, RuntimeError):
    """The input was fine but running it failed (an unreachable Ray cluster, workers that cannot
    start, a stored search that is not there): the CLI exits 1."""

    exit_code = 1
