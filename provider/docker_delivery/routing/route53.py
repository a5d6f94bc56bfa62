"""Route53Router: blue/green by DNS, with weighted records of one name in a hosted zone.

Each colour has a weighted record set of the name (``SetIdentifier`` = the colour; an alias to
its load balancer, or its addresses). A switch is one ``ChangeResourceRecordSets`` batch of
UPSERTs of every colour's weight (never a DELETE: a record set deleted and created again can
leave resolvers with NXDOMAIN for the negative-cache TTL), waited on until Route 53 reports it
``INSYNC``, then read back. Resolvers keep the old answer for up to the record's TTL and clients
keep their connections open: the old colour must keep serving for ``ttl + connection_lifetime_s``
after the switch before it is retired (:attr:`Route53Router.retire_wait_s`), and the runner says
so in its log.

This module is domain code: it never imports Airflow; the boto3 ``route53`` client comes in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any, Final

from docker_delivery.awsapi import call
from docker_delivery.errors import RouterError
from docker_delivery.routing.weighted import check_weights

MAX_WEIGHT: Final = 255


class Route53Router:
    """Weighted records ``record_name`` (``record_type``) in ``zone_id``, one per group:
    ``targets`` maps a group to ``{"alias": {"HostedZoneId", "DNSName"}}`` or
    ``{"values": ["10.0.0.5", ...]}``."""

    max_weight = MAX_WEIGHT

    def __init__(
        self,
        route53: Any,
        zone_id: str,
        record_name: str,
        targets: Mapping[str, Mapping[str, Any]],
        *,
        record_type: str = "A",
        ttl: int = 60,
        connection_lifetime_s: float = 0.0,
        sync_timeout_s: float = 300.0,
        poll_s: float = 2.0,
        log: Callable[[str], None] = print,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not targets:
            raise RouterError("a weighted DNS name needs at least one record set")
        self.route53 = route53
        self.zone_id = zone_id
        self.name = record_name if record_name.endswith(".") else record_name + "."
        self.type = record_type
        self.targets = dict(targets)
        self.ttl = ttl
        self.connection_lifetime_s = connection_lifetime_s
        self.sync_timeout_s = sync_timeout_s
        self.poll_s = poll_s
        self.log = log
        self.sleep = sleep

    @property
    def retire_wait_s(self) -> float:
        """How long the old colour keeps serving after a switch: resolvers' caches (the TTL)
        and the connections opened just before it (the spec's connection lifetime)."""
        return self.ttl + self.connection_lifetime_s

    def hold_old(self, delay: float) -> tuple[float, str]:
        if self.retire_wait_s >= delay:
            return self.retire_wait_s, (
                f"resolvers may answer with the old records for their TTL ({self.ttl}s) and "
                f"clients keep their connections up to {self.connection_lifetime_s:.0f}s"
            )
        return delay, "the settings' scale_down_delay (longer than the TTL and connections)"

    def _call(self, operation: str, doing: str, **params: Any) -> Any:
        return call(self.route53, operation, f"Route 53: {doing}", RouterError, **params)

    def weights(self) -> dict[str, int]:
        found: dict[str, int] = {}
        params: dict[str, Any] = {
            "HostedZoneId": self.zone_id,
            "StartRecordName": self.name,
            "StartRecordType": self.type,
        }
        while True:
            page = self._call("list_resource_record_sets", f"reading {self.name}", **params)
            for record in page.get("ResourceRecordSets") or []:
                if record["Name"] != self.name or record["Type"] != self.type:
                    return {g: found.get(g, 0) for g in self.targets}
                if record.get("SetIdentifier") in self.targets:
                    found[record["SetIdentifier"]] = int(record.get("Weight", 0))
            if not page.get("IsTruncated"):
                return {g: found.get(g, 0) for g in self.targets}
            params["StartRecordName"] = page["NextRecordName"]
            params["StartRecordType"] = page["NextRecordType"]
            if page.get("NextRecordIdentifier"):
                params["StartRecordIdentifier"] = page["NextRecordIdentifier"]

    def _record(self, group: str, weight: int) -> dict[str, Any]:
        target = self.targets[group]
        record: dict[str, Any] = {
            "Name": self.name,
            "Type": self.type,
            "SetIdentifier": group,
            "Weight": weight,
        }
        if "alias" in target:
            record["AliasTarget"] = {"EvaluateTargetHealth": True, **target["alias"]}
        else:
            record["TTL"] = self.ttl
            record["ResourceRecords"] = [{"Value": v} for v in target["values"]]
        return record

    def set_weights(self, weights: Mapping[str, int]) -> dict[str, int]:
        check_weights(weights, self.targets, MAX_WEIGHT)
        wanted = {g: int(weights.get(g, 0)) for g in self.targets}
        change = self._call(
            "change_resource_record_sets",
            f"setting the weights of {self.name} to {wanted}",
            HostedZoneId=self.zone_id,
            ChangeBatch={
                "Comment": f"docker-delivery: weights {wanted}",
                "Changes": [
                    {"Action": "UPSERT", "ResourceRecordSet": self._record(g, w)}
                    for g, w in wanted.items()
                ],
            },
        )["ChangeInfo"]
        self._wait_insync(change)
        now = self.weights()
        if now != wanted:
            raise RouterError(f"Route 53 serves {self.name} as {now} after it was set to {wanted}")
        self.log(f"Route 53 {self.name} weights: {now} (INSYNC)")
        return now

    def _wait_insync(self, change: Mapping[str, Any]) -> None:
        deadline = time.monotonic() + self.sync_timeout_s
        status, change_id = change.get("Status"), change["Id"]
        while status != "INSYNC":
            if time.monotonic() >= deadline:
                raise RouterError(
                    f"Route 53 change {change_id} still {status} after {self.sync_timeout_s:.0f}s"
                )
            self.sleep(self.poll_s)
            status = self._call("get_change", f"waiting for {change_id}", Id=change_id)[
                "ChangeInfo"
            ]["Status"]
