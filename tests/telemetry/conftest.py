"""The telemetry tests' collectors: real OTLP/HTTP receivers on loopback ports."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.otlp_receiver import OTLPReceiver


def _receiving(mode: str = "ok") -> Iterator[OTLPReceiver]:
    collector = OTLPReceiver(mode=mode).start()
    yield collector
    collector.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[OTLPReceiver]:
    """A collector that takes every span, shared by a test module's server."""
    yield from _receiving()


@pytest.fixture
def own_receiver() -> Iterator[OTLPReceiver]:
    """A collector of the test's own: what it got is the test's alone."""
    yield from _receiving()


@pytest.fixture(scope="module")
def hanging() -> Iterator[OTLPReceiver]:
    """A collector that takes each export and never answers."""
    yield from _receiving("hang")


@pytest.fixture(scope="module")
def refusing() -> Iterator[OTLPReceiver]:
    """A collector that answers every export with a 503."""
    yield from _receiving("refuse")
