"""Incidents from a stream of check results: a pure state machine with serializable state.

Per environment, every component keeps its consecutive failure and success counts. An incident
opens when a component fails ``failure_threshold`` times in a row; it groups every component
that goes down while it is open, sends reminders every ``reminder_seconds``, and closes once each
of its components has passed ``recovery_threshold`` times in a row, reporting the downtime from
the first failure to the first good check. A component whose state changes more than
``flap_changes`` times within ``flap_window_seconds`` is flapping: it gets one notice and opens
no incidents until it settles (half as many changes in the window). While an environment is held
(a deployment is being verified, or the sensor replays history on its first tick), state keeps
moving but nothing is announced; an incident still open, or a component still flapping, when the
hold lifts is announced then, and one that ended during the hold is never announced. A hold for a
verification is itself announced when it starts and when it ends (``hold_events``).

``SweepWatch`` watches the sweeps themselves, a dead-man's switch: when no result has arrived for
``silence_intervals`` sweep intervals, or the latest sweep run failed (a bad setting fails every
run at its first step), that is one incident of its own: one message, reminders, and one notice
when sweeps succeed again. Without it an outage that starts while nothing checks goes unseen.

The whole state is a JSON-compatible dict, so it can live in a sensor cursor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

OPENED, REMINDER, RECOVERED, FLAPPING = "opened", "reminder", "recovered", "flapping"
CHECKS_STOPPED, CHECKS_FAILING = "checks_stopped", "checks_failing"
CHECKS_REMINDER, CHECKS_RESUMED = "checks_reminder", "checks_resumed"
STOPPED, FAILING = "stopped", "failing"
HOLD_STARTED, HOLD_ENDED = "hold_started", "hold_ended"
HOLD_LIMIT = "limit"  # a hold that ended because it reached its time limit, not with its run
SWEEP_JOB = "health_check_job"  # the Dagster job whose runs are the sweeps


@dataclass(frozen=True)
class IncidentSettings:
    failure_threshold: int = 3
    recovery_threshold: int = 2
    reminder_seconds: float = 3600.0
    flap_changes: int = 4
    flap_window_seconds: float = 3600.0


@dataclass(frozen=True)
class Observation:
    component: str
    ok: bool
    reason: str
    at: float


@dataclass
class AlertEvent:
    """What to announce. ``components`` maps each component to its latest failure reason (empty
    for a recovery)."""

    kind: str
    environment: str
    at: float
    started_at: float | None = None
    components: dict[str, str] = field(default_factory=dict)
    downtime_seconds: float | None = None
    changes: int | None = None
    # Sweep watch events only: what is wrong (stopped/failing), the failed run and its reason,
    # when the last result was recorded, and the environments whose open incidents go unchecked.
    condition: str | None = None
    reason: str = ""
    run_id: str | None = None
    last_result_at: float | None = None
    environments: list[str] = field(default_factory=list)
    # Hold events only: when the hold ends at the latest.
    until: float | None = None


def hold_events(previous: dict[str, dict], current: dict[str, dict], now: float) -> list[AlertEvent]:
    """One event when an environment's health alerts start being held for a deployment
    verification, one when they stop (its run ended, or the hold reached its limit). A hold is
    ``{"run_id", "since", "until"}``; ``previous`` is what the last tick saw, ``current`` this one."""
    events = []
    for name in sorted(set(previous) - set(current)):
        hold = previous[name]
        events.append(AlertEvent(HOLD_ENDED, name, now, started_at=hold.get("since"), run_id=hold.get("run_id"),
                                 until=hold.get("until"),
                                 condition=HOLD_LIMIT if now >= (hold.get("until") or now) else None))
    for name in sorted(set(current) - set(previous)):
        hold = current[name]
        events.append(AlertEvent(HOLD_STARTED, name, now, started_at=hold.get("since"), run_id=hold.get("run_id"),
                                 until=hold.get("until")))
    return events


def _new_component() -> dict:
    return {"failures": 0, "successes": 0, "last_ok": None, "first_failure_at": None, "back_at": None,
            "reason": "", "changes": [], "flapping": False, "flap_announced": False}


class IncidentTracker:
    def __init__(self, settings: IncidentSettings | None = None, state: dict | None = None):
        self.settings = settings or IncidentSettings()
        self.state = state if state is not None else {"environments": {}}

    @classmethod
    def from_json(cls, text: str | None, settings: IncidentSettings | None = None) -> IncidentTracker:
        if not text:
            return cls(settings)
        try:
            state = json.loads(text)
        except ValueError:
            return cls(settings)
        return cls.from_state(state, settings)

    @classmethod
    def from_state(cls, state, settings: IncidentSettings | None = None) -> IncidentTracker:
        """A tracker from a state dict (e.g. read from a cursor); anything malformed starts fresh."""
        if not isinstance(state, dict) or not isinstance(state.get("environments"), dict):
            return cls(settings)
        return cls(settings, state)

    def to_json(self) -> str:
        return json.dumps(self.state, sort_keys=True, separators=(",", ":"))

    def environment(self, name: str) -> dict:
        return self.state["environments"].setdefault(name, {"components": {}, "incident": None, "last_at": None})

    def observe(self, environment: str, observations: list[Observation], hold: bool = False) -> list[AlertEvent]:
        """Apply new results (in any order) and return what should be announced."""
        env = self.environment(environment)
        events: list[AlertEvent] = []
        for observation in sorted(observations, key=lambda o: o.at):
            self._apply(env["components"].setdefault(observation.component, _new_component()), observation)
            env["last_at"] = max(env["last_at"] or observation.at, observation.at)
        if not hold:
            # Announced on the first tick that is not held, so a component that started flapping
            # during a hold (or the first tick's quiet replay) and still is gets its notice then.
            for name, component in sorted(env["components"].items()):
                if component["flapping"] and not component.get("flap_announced", True):
                    component["flap_announced"] = True
                    events.append(AlertEvent(FLAPPING, environment, env["last_at"],
                                             components={name: component["reason"]},
                                             changes=len(component["changes"])))
        if env["last_at"] is not None:
            events.extend(self._evaluate(environment, env, env["last_at"], hold))
        return events

    def _apply(self, component: dict, observation: Observation) -> None:
        settings = self.settings
        if component["last_ok"] is not None and component["last_ok"] != observation.ok:
            component["changes"].append(observation.at)
        component["changes"] = [t for t in component["changes"] if t > observation.at - settings.flap_window_seconds]
        component["last_ok"] = observation.ok
        if observation.ok:
            component["successes"] += 1
            if component["successes"] == 1:
                component["back_at"] = observation.at
            component["failures"] = 0
        else:
            component["failures"] += 1
            if component["failures"] == 1 and (component["first_failure_at"] is None or component["successes"]):
                component["first_failure_at"] = observation.at
            component["successes"] = 0
            component["reason"] = observation.reason
        changes = len(component["changes"])
        if changes > settings.flap_changes and not component["flapping"]:
            component["flapping"] = True
            component["flap_announced"] = False
        elif component["flapping"] and changes <= settings.flap_changes // 2:
            component["flapping"] = False
            component["flap_announced"] = False

    def _failing(self, env: dict, names) -> dict[str, str]:
        return {name: env["components"][name]["reason"] for name in names
                if env["components"].get(name, {}).get("failures")}

    def _evaluate(self, name: str, env: dict, now: float, hold: bool) -> list[AlertEvent]:
        settings = self.settings
        components = env["components"]
        down = sorted(c for c, state in components.items()
                      if state["failures"] >= settings.failure_threshold and not state["flapping"])
        incident = env["incident"]
        if incident is None:
            if not down:
                self._forget_recovered(components)
                return []
            started = min(components[c]["first_failure_at"] for c in down)
            incident = env["incident"] = {"started_at": started, "components": down, "announced": not hold,
                                          "last_notice_at": now}
            if hold:
                return []
            return [AlertEvent(OPENED, name, now, started, self._failing(env, down))]
        for component in down:
            if component not in incident["components"]:
                incident["components"].append(component)
        members = [components[c] for c in incident["components"] if c in components]
        if all(member["successes"] >= settings.recovery_threshold for member in members):
            back_at = max(member["back_at"] for member in members)
            env["incident"] = None
            self._forget_recovered(components)
            if not incident["announced"]:
                return []
            return [AlertEvent(RECOVERED, name, now, incident["started_at"],
                               {c: "" for c in incident["components"]},
                               downtime_seconds=max(0.0, back_at - incident["started_at"]))]
        if hold:
            return []
        if not incident["announced"]:
            incident["announced"] = True
            incident["last_notice_at"] = now
            return [AlertEvent(OPENED, name, now, incident["started_at"],
                               self._failing(env, incident["components"]))]
        if now - incident["last_notice_at"] >= settings.reminder_seconds:
            incident["last_notice_at"] = now
            return [AlertEvent(REMINDER, name, now, incident["started_at"],
                               self._failing(env, incident["components"]))]
        return []

    @staticmethod
    def _forget_recovered(components: dict) -> None:
        for state in components.values():
            if state["successes"]:
                state["first_failure_at"] = None


@dataclass(frozen=True)
class SweepWatchSettings:
    interval_seconds: float = 300.0
    silence_intervals: int = 3
    reminder_seconds: float = 3600.0
    # A sweep is recorded a little after its interval starts (the run is launched, the checks take
    # up to their timeout), so missing exactly ``silence_intervals - 1`` sweeps never alerts.
    margin_seconds: float = 60.0

    @property
    def silence_seconds(self) -> float:
        return self.interval_seconds * self.silence_intervals + self.margin_seconds


@dataclass(frozen=True)
class SweepRun:
    """The newest finished run of the sweep job: did it succeed, and if not, why."""

    run_id: str
    ok: bool
    ended_at: float
    reason: str = ""


class SweepWatch:
    """Are the health sweeps producing results? One incident when they stop (no result for
    ``silence_seconds``, measured on the caller's clock from the last tick that read a result, or
    from the first tick: a fresh instance gets its first intervals) or fail (the newest finished
    sweep run failed), reminders every ``reminder_seconds``, one notice when they are back.

    State: ``since`` (first tick), ``last_tick_at``, ``last_seen_at`` (tick that last read a
    result), ``last_result_at`` (that result's own time, for the message), ``latest_run`` and
    ``incident``."""

    def __init__(self, settings: SweepWatchSettings | None = None, state: dict | None = None):
        self.settings = settings or SweepWatchSettings()
        self.state = state if isinstance(state, dict) else {}

    def observe(self, now: float, result_at: float | None = None, latest_run: SweepRun | None = None,
                hold: bool = False, open_incidents: list[str] | tuple = ()) -> list[AlertEvent]:
        """One tick: ``result_at`` is the time of the newest result read since the last tick (None
        when none arrived), ``latest_run`` the newest finished sweep run. ``hold`` (the first
        tick's quiet replay) moves the state and announces nothing; what is still wrong on the
        next tick is announced then."""
        state, settings = self.state, self.settings
        last_tick = state.get("last_tick_at")
        paused = last_tick is not None and now - last_tick > settings.silence_seconds
        if state.get("since") is None or (paused and state.get("incident") is None):
            # The first tick, or the sensor itself did not run for a while (daemon down): the
            # schedule gets its intervals again, measured from now.
            state["since"] = now
        state["last_tick_at"] = now
        if result_at is not None:
            state["last_seen_at"] = now
            state["last_result_at"] = max(result_at, state.get("last_result_at") or result_at)
        if latest_run is not None:
            state["latest_run"] = {"run_id": latest_run.run_id, "ok": latest_run.ok,
                                   "ended_at": latest_run.ended_at, "reason": latest_run.reason}
        run = state.get("latest_run") or {}
        baseline = max(state["since"], state.get("last_seen_at") or 0.0)
        if run and not run.get("ok"):
            condition = FAILING
        elif now - baseline > settings.silence_seconds:
            condition = STOPPED
        else:
            condition = None
        incident = state.get("incident")

        def event(kind: str) -> AlertEvent:
            current = state["incident"] or incident
            return AlertEvent(kind, "", now, current["started_at"], condition=current["condition"],
                              reason=run.get("reason", "") if current["condition"] == FAILING else "",
                              run_id=run.get("run_id") if current["condition"] == FAILING else None,
                              last_result_at=state.get("last_result_at"),
                              environments=sorted(open_incidents),
                              downtime_seconds=max(0.0, now - current["started_at"]) if kind == CHECKS_RESUMED
                              else None)

        if condition is None:
            state["incident"] = None
            return [event(CHECKS_RESUMED)] if incident and incident["announced"] else []
        if incident is None:
            started = now if condition == FAILING else baseline
            incident = state["incident"] = {"condition": condition, "started_at": started,
                                            "announced": not hold, "last_notice_at": now}
            return [] if hold else [event(CHECKS_FAILING if condition == FAILING else CHECKS_STOPPED)]
        incident["condition"] = condition
        if hold:
            return []
        if not incident["announced"]:
            incident.update(announced=True, last_notice_at=now)
            return [event(CHECKS_FAILING if condition == FAILING else CHECKS_STOPPED)]
        if now - incident["last_notice_at"] >= settings.reminder_seconds:
            incident["last_notice_at"] = now
            return [event(CHECKS_REMINDER)]
        return []
