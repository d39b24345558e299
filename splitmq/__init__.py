"""splitmq: run one deep neural network across several small devices over MQTT."""

from splitmq import compiled as _compiled

__version__ = "0.1.0"

_compiled.choose()  # before any hot module is imported: compiled, or pure Python
