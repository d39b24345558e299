"""splitmq: run one deep neural network across several small devices over MQTT."""

__version__ = "0.1.0"
