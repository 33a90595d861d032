"""Errors raised by the proofs layer. Each says what is wrong and how to fix it."""

from __future__ import annotations

from damocles_py._core import ProofsError  # a proofs call failed; carries the library's message

# The extension names its module `_core`; pickle (a child processor's errors) needs the importable path.
ProofsError.__module__ = "damocles_py._core"

__all__ = ["InvalidInput", "ParametersMissing", "ProofsError"]


class InvalidInput(ValueError):
    """An argument to a proofs call is wrong. `argument` names it."""

    def __init__(self, argument: str, problem: str):
        self.argument = argument
        self.problem = problem
        super().__init__(f"{argument}: {problem}")

    def __reduce__(self):  # picklable: a child processor raises it across the process boundary
        return (type(self), (self.argument, self.problem))


class ParametersMissing(RuntimeError):
    """Groth parameter files a proof needs are not in the parameter cache."""

    def __init__(self, what: str, missing: list[str], cache_dir: str, command: str):
        self.missing = missing
        self.cache_dir = cache_dir
        self.command = command
        super().__init__(
            f"{what} needs Groth parameters that are missing from {cache_dir}: "
            f"{', '.join(missing)}. Generate them with: {command}"
        )
        self._what = what

    def __reduce__(self):  # picklable: a child processor raises it across the process boundary
        return (type(self), (self._what, self.missing, self.cache_dir, self.command))
