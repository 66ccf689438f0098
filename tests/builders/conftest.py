"""Fixtures shared by the builder tests."""

from collections.abc import Callable
from types import ModuleType

import pytest

RecordCalls = Callable[..., list]


@pytest.fixture
def record_calls(monkeypatch: pytest.MonkeyPatch) -> RecordCalls:
    """``record_calls(module, name, crash_on=None)`` wraps ``module.name``: each call appends its first
    argument to the returned list and goes through, except the ``crash_on``-th (1-based), which
    raises ``RuntimeError("simulated crash")``. Wrapping again wraps the original function."""

    def patch(module: ModuleType, name: str, crash_on: int | None = None) -> list:
        original = getattr(getattr(module, name), "__wrapped__", getattr(module, name))
        calls: list = []

        def recorded(*args, **kwargs):
            calls.append(args[0])
            if len(calls) == crash_on:
                raise RuntimeError("simulated crash")
            return original(*args, **kwargs)

        recorded.__wrapped__ = original
        monkeypatch.setattr(module, name, recorded)
        return calls

    return patch
