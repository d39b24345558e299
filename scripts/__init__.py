"""Developer scripts: soak test, conformance table, the emulated Raspberry Pi root."""
