"""The client's settings: one :class:`ClientConfig` per client; each request may override
its constraints (see :meth:`splitmq.client.Client.infer_async`)."""

from __future__ import annotations

from dataclasses import dataclass

from splitmq.errors import ConfigError


@dataclass(frozen=True)
class ClientConfig:
    """The client's defaults; each ``infer`` may override the constraints.

    Attributes:
        model: the model to ask for when ``infer`` names none.
        deadline_s: time from ``infer`` to the answer, retries included.
        max_attempts: sends per request (the first one included). A send an agent
            refuses as ``overloaded`` does not count: the next one waits instead.
        attempt_timeout_factor, attempt_timeout_margin_s, min_attempt_timeout_s: one
            attempt waits ``max(min, factor * expected latency + margin)``, the last
            one until the deadline; the expected latency is the larger of the plan's
            and the one observed lately (:func:`splitmq.client.routes.attempt_timeout_s`).
        overload_backoff_s: the least wait before an attempt goes back to an agent that
            answered ``overloaded`` (doubled for each such answer, up to the deadline;
            see :func:`splitmq.client.routes.backoff_s`).
        replan_wait_s: when the coordinator answers that a stage has no replica online
            (``unavailable``: the deployment is being healed), ask again after about
            this long (jittered), until the deadline.
        plan_timeout_s: wait this long for the coordinator's plan, then ask again while
            the deadline allows (a coordinator may be restarting); the request fails as
            ``no_plan`` when none came. When a fresh plan for a retry does not come, the
            retry goes on with the plan it had.
        plan_ttl_s: ask again for a plan after this long, even if its epoch holds. The
            old plan serves meanwhile (and on, if the coordinator does not answer) until
            the coordinator refuses it or its deployment moves to a new epoch.
        max_in_flight: requests ``stream`` keeps in flight.
        resize_inputs: resize (and convert the channels of) images (:class:`ImageInput`,
            image files) to the model's input; arrays are never resized.
        retry_on_offline: an attempt whose route meets an agent's will (offline) is
            retried at once, not at its timeout.
        stale_periods, min_stale_s: an agent whose telemetry is older than this many
            of its periods (at least ``min_stale_s``) counts as dead.
        top_k: classes kept in each record's ``top``.
        remember_finished: finished request ids kept to recognise late duplicates.
        hop_qos: the MQTT QoS of a request's activations and result, from the client
            through every stage (an agent forwards at the QoS a request came at). 1,
            the default: each hop at least once, the sender keeps a message until the
            broker acknowledges it and sends it again after a reconnection. 0: each
            hop at most once, with no acknowledgement to send, read or wait for; a
            message lost with a connection is sent again by the request's attempt
            timeout, on a fallback route. A pipelined stream gains 1 to 8 points of
            the bare-MQTT floor's throughput, a split request 0.15 to 0.3 ms
            (docs/performance.md); the deadline still bounds every request, and each
            still ends exactly once.
    """

    model: str | None = None
    deadline_s: float = 10.0
    max_attempts: int = 3
    attempt_timeout_factor: float = 3.0
    attempt_timeout_margin_s: float = 0.5
    min_attempt_timeout_s: float = 0.25
    overload_backoff_s: float = 0.05
    replan_wait_s: float = 0.25
    plan_timeout_s: float = 5.0
    plan_ttl_s: float = 30.0
    max_in_flight: int = 32
    resize_inputs: bool = True
    retry_on_offline: bool = True
    stale_periods: float = 3.0
    min_stale_s: float = 1.0
    top_k: int = 5
    remember_finished: int = 10_000
    hop_qos: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.hop_qos, bool) or self.hop_qos not in (0, 1):
            raise ConfigError(
                f"hop_qos must be 0 (at most once per hop) or 1 (at least once), not "
                f"{self.hop_qos!r}: a request's end-to-end retries make QoS 2's exactly-once "
                "hand-shake per hop cost without gain"
            )
        if self.max_attempts < 1 or self.max_in_flight < 1:
            raise ConfigError("max_attempts and max_in_flight must be at least 1")
        if min(self.deadline_s, self.plan_timeout_s, self.plan_ttl_s) <= 0:
            raise ConfigError("deadline_s, plan_timeout_s and plan_ttl_s must be above 0")
        if self.overload_backoff_s < 0 or self.replan_wait_s < 0:
            raise ConfigError("overload_backoff_s and replan_wait_s must not be negative")
