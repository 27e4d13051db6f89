"""Where a lost AZ's SimFill task runs while its AZ is down: ECS-style rescheduling.

An ECS service spread across AZs keeps its desired count when an AZ is lost by
starting the lost tasks in the AZs that survive. Both runtimes follow this one rule:
the embedded runtime starts stand-in threads, `make run-multi`'s supervisor stand-in
processes. Pure: AZ names in, placement out.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence


def stand_in_hosts(azs: Sequence[str], down: Collection[str]) -> dict[str, str]:
    """{lost AZ: surviving AZ that runs its stand-in task}, for one region's AZs.

    The lost tasks are spread round robin over the surviving AZs in their configured
    order, so the same faults always give the same placement. No AZ survives (a region
    outage): no stand-ins, the region's queue keeps what it holds until it is back.
    """
    survivors = [az for az in azs if az not in down]
    lost = [az for az in azs if az in down]
    if not survivors:
        return {}
    return {az: survivors[i % len(survivors)] for i, az in enumerate(lost)}


def stand_in_name(lost: str, host: str, engine: str = "simfill") -> str:
    return f"{engine}-{host}-for-{lost}"


def matcher_role(azs: Sequence[str], az: str, stand_in_for: str = "") -> str:
    """A stateful engine's task (the matcher) in a region: the first AZ's task, or the task
    standing in for it, is "active" (it owns the region's books); the others "standby"."""
    return "active" if azs and (stand_in_for or az) == azs[0] else "standby"
