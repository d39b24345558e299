"""The coordinator: registry, model pool service, deployer, per-request planner.

Only the model pool's chunk server exists so far
(:class:`splitmq.coordinator.pool_service.PoolService`). Importing this package never
imports TensorFlow.
"""
