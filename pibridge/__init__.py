"""pibridge: a Raspberry Pi sensor bridge to the TeamViewer IoT Agent's local MQTT API."""

__version__ = "0.1.0"
