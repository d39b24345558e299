"""MQTT 3.1.1 and 5.0 on the wire, shared by the embedded broker and the client transport.

- ``codes``: the protocol's constants (packet types, properties, reason codes).
- ``packets``: the codec (pure functions over bytes, no I/O).
"""
