"""The web server: phones join the fleet by opening a page, people watch it live.

``splitmq web`` (or ``splitmq coordinator --web PORT``) serves, from this package's
own files, on one port:

=====================  =================================================================
``/``                  the fleet, live from the retained topics (``splitmq fleet --watch``)
``/agent.html``        the browser agent (built from ``web/`` into ``splitmq/web/static``)
``/wasm/...``          LiteRT.js's wasm files, ``application/wasm``
``/config.json``       what the agent page needs: broker URL, namespace, credentials...
``/shards/{sha256}``   shards of the model pool by digest, cacheable forever
``/mqtt``              MQTT over WebSocket: a relay to the broker's TCP listener
``/fleet.json``        the fleet page's data
``/join.svg``          the QR code of the agent page's URL
=====================  =================================================================

Every response carries the cross-origin isolation headers (COOP/COEP) that WebAssembly
threads need. The modules: :mod:`~splitmq.web.config` (settings, ``config.json``),
:mod:`~splitmq.web.static` (files and headers), :mod:`~splitmq.web.shards`,
:mod:`~splitmq.web.relay`, :mod:`~splitmq.web.qr`, :mod:`~splitmq.web.fleet`,
:mod:`~splitmq.web.server` (the application and its thread), :mod:`~splitmq.web.cli`.

The server needs the ``web`` extra (``pip install splitmq[web]``: aiohttp, segno);
nothing is imported here, so the command line loads it only for ``splitmq web``.
"""
