"""appliance: an OpenAI-compatible model cluster served from one YAML file."""

__version__ = "0.1.0"
