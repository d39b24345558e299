"""The coordinator: registry, model pool, deployer, per-request planner.

- :mod:`~splitmq.coordinator.service`: ``Coordinator``, the shell that wires the parts
  below to the broker (``splitmq coordinator``, :mod:`~splitmq.coordinator.cli`);
- :mod:`~splitmq.coordinator.registry` and :mod:`~splitmq.coordinator.fleet_table`: the
  fleet as its status and telemetry describe it;
- :mod:`~splitmq.coordinator.model_pool` (versions, shards cut on demand) and
  :mod:`~splitmq.coordinator.pool_service` (shards served by digest, in chunks);
- :mod:`~splitmq.coordinator.partition` (where to cut and who hosts each stage) and
  :mod:`~splitmq.coordinator.deployer` (loading, publishing and healing deployments,
  with :mod:`~splitmq.coordinator.commands` and :mod:`~splitmq.coordinator.views`);
- :mod:`~splitmq.coordinator.planner`: a route and its fallbacks per request, pure.

Importing this package never imports TensorFlow.
"""
