"""What a request cost: its tokens at the answering model's prices.

Prices are per million tokens, input and output apart, in ``billing.currency``; a model
without ``pricing`` is free (its tokens are still counted). The prices are those of the
config the request started under, so a reload that changes a price applies to requests
that start after it.
"""

from __future__ import annotations

from appliance.config import ApplianceConfig
from appliance.config.model import PricingConfig
from appliance.wire.usage import Usage

MILLION = 1_000_000


class Prices:
    """The prices of one config's models."""

    __slots__ = ("config", "currency", "models")

    def __init__(self, config: ApplianceConfig) -> None:
        self.config = config
        self.currency = config.billing.currency
        self.models: dict[str, PricingConfig] = {
            m.name: m.pricing for m in config.models if m.pricing is not None
        }

    def cost(self, model: str, usage: Usage) -> float:
        """What ``usage`` on ``model`` costs (0 for a free model)."""
        price = self.models.get(model)
        if price is None:
            return 0.0
        return (
            usage.prompt * price.input_per_mtok + usage.completion * price.output_per_mtok
        ) / MILLION


class PriceList:
    """:class:`Prices` of whichever config a request runs under, built once per config."""

    def __init__(self) -> None:
        self._current: Prices | None = None

    def of(self, config: ApplianceConfig) -> Prices:
        """The prices of ``config``."""
        current = self._current
        if current is None or current.config is not config:
            current = self._current = Prices(config)
        return current
