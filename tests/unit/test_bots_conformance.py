"""Our Remote Workers API code against the public definitions: method paths, field numbers and
enum values of google.devtools.remoteworkers.v1test2 (transcribed from the public
specification), so a renumbered field or a misspelt service fails here, not on a farm."""

from __future__ import annotations

from typing import Any

import pytest

from distbuild._proto.google.devtools.remoteworkers.v1test2 import bots_pb2, worker_pb2

PKG = "google.devtools.remoteworkers.v1test2"
METHODS = {f"/{PKG}.Bots/CreateBotSession", f"/{PKG}.Bots/UpdateBotSession",
           f"/{PKG}.Bots/PostBotEventTemp"}
FIELDS: dict[Any, dict[str, int]] = {
    bots_pb2.BotSession: {"name": 1, "bot_id": 2, "status": 3, "worker": 4, "leases": 5,
                          "expire_time": 6, "version": 7},
    bots_pb2.Lease: {"id": 7, "payload": 8, "result": 9, "state": 2, "status": 3,
                     "requirements": 4, "expire_time": 5, "assignment": 1,
                     "inline_assignment": 6},
    bots_pb2.CreateBotSessionRequest: {"parent": 1, "bot_session": 2},
    bots_pb2.UpdateBotSessionRequest: {"name": 1, "bot_session": 2, "update_mask": 3},
    bots_pb2.PostBotEventTempRequest: {"name": 1, "type": 2, "msg": 3},
    bots_pb2.AdminTemp: {"command": 1, "arg": 2},
    worker_pb2.Worker: {"devices": 1, "properties": 2, "configs": 3},
    worker_pb2.Worker.Property: {"key": 1, "value": 2},
    worker_pb2.Worker.Config: {"key": 1, "value": 2},
    worker_pb2.Device: {"handle": 1, "properties": 2},
    worker_pb2.Device.Property: {"key": 1, "value": 2},
}
ENUMS: dict[Any, dict[str, int]] = {
    bots_pb2.BotStatus: {"BOT_STATUS_UNSPECIFIED": 0, "OK": 1, "UNHEALTHY": 2,
                         "HOST_REBOOTING": 3, "BOT_TERMINATING": 4, "INITIALIZING": 5},
    bots_pb2.LeaseState: {"LEASE_STATE_UNSPECIFIED": 0, "PENDING": 1, "ACTIVE": 2,
                          "COMPLETED": 4, "CANCELLED": 5},
}


def test_bots_method_paths() -> None:
    """The Bots service's methods have the paths farms serve them on."""
    service = bots_pb2.DESCRIPTOR.services_by_name["Bots"]
    assert {f"/{service.full_name}/{m.name}" for m in service.methods} == METHODS


@pytest.mark.parametrize("message", list(FIELDS), ids=lambda m: m.DESCRIPTOR.full_name)
def test_field_numbers(message: Any) -> None:
    """Every field has the name and number of the public definition, and no other exists."""
    assert {f.name: f.number for f in message.DESCRIPTOR.fields} == FIELDS[message]
    assert message.DESCRIPTOR.full_name.startswith(PKG + ".")


@pytest.mark.parametrize("enum", list(ENUMS), ids=lambda e: e.DESCRIPTOR.full_name)
def test_enum_values(enum: Any) -> None:
    """Bot statuses and lease states have the public values (a farm compares them)."""
    assert {v.name: v.number for v in enum.DESCRIPTOR.values} == ENUMS[enum]


def test_lease_on_the_wire() -> None:
    """A lease's id and state travel under field numbers 7 and 2 (read back by number)."""
    data = bots_pb2.Lease(id="x", state=bots_pb2.COMPLETED).SerializeToString()
    assert data == bytes([(2 << 3) | 0, 4, (7 << 3) | 2, 1]) + b"x"
