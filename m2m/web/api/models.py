"""The JSON shapes of the HTTP API, as its OpenAPI document publishes them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(Shape):
    error: str


class DeviceRow(Shape):
    id: str
    ident: str
    domain: str | None
    domain_id: str | None
    connected: bool
    since: str | None = Field(description="When the latest connection (or disconnection) was")
    source: str | None = Field(description="The device's address, ip:port, on that connection")
    last_seen: str | None = Field(description="Time of its newest record of any type")


class DevicePage(Shape):
    devices: list[DeviceRow]
    next: str | None = Field(description="Cursor of the next page; null at the end")


class SettingRow(Shape):
    name: str
    value: str | None
    pending: bool = Field(description="Sent to the device but not acknowledged yet")
    acked_at: str | None


class CommandRow(Shape):
    id: str
    text: str | None = Field(description="Null once answered: the registry keeps the response")
    pending: bool
    response: str | None


class RouteRow(Shape):
    priority: int
    regex: str
    topic: str


class DeviceDetail(DeviceRow):
    status: dict[str, str]
    settings: list[SettingRow]
    commands: list[CommandRow]
    last_location: dict[str, Any] | None


class NewDevice(Shape):
    ident: str = Field(min_length=1)
    domain: str | None = Field(None, description="Name or id; default: the default domain")


class SettingValue(Shape):
    value: str


class PushedSetting(SettingRow):
    pushed: bool = Field(description="Whether nsqd took the push to the device's receiver")


class NewCommand(Shape):
    text: str = Field(min_length=1)


class CreatedCommand(Shape):
    id: str
    pushed: bool


class Pushed(Shape):
    pushed: bool


# -- registry, firmware, domains, users -------------------------------------------------


class RegistryNodeOut(Shape):
    path: str = Field(description="Normalised: absolute, ending with '/'")
    status: str = Field(description="'created' (other nodes are 404)")
    values: dict[str, str]
    children: list[str] = Field(description="Names, in name order; hidden (.x) ones if all=true")
    withheld: list[str] = Field(
        description="Names of values kept secret (password hashes, keys): never sent"
    )


class NodeValues(Shape):
    values: dict[str, str] = Field(
        default_factory=dict, description="Set on the node; its other values are left alone"
    )


class DeletedNodes(Shape):
    deleted: int = Field(description="How many nodes were deleted, the subtree included")


class FirmwareRow(Shape):
    name: str
    id: str
    size: int | None = Field(description="Bytes; null if its file is unreadable")
    type: str | None = Field(description="Its MIME type, as uploaded")


class DomainRow(Shape):
    id: str
    name: str
    devices: int = Field(description="How many devices are members")
    users: int = Field(description="How many users are members")


class NewDomain(Shape):
    name: str = Field(min_length=1)


class UserRow(Shape):
    id: str
    name: str
    domain: str | None = Field(description="Its domain's name (its id if the domain is gone)")
    domain_id: str | None
    admin: bool


class NewUser(Shape):
    name: str = Field(min_length=1)
    domain: str = Field("default", description="A domain's name or id")
    admin: bool = False
    password: str | None = Field(None, description="Without one, the user cannot log in yet")


class NewPassword(Shape):
    password: str


class CreatedToken(Shape):
    id: str
    token: str = Field(description="Send as 'Authorization: Bearer <token>'; shown only now")


class TokenRow(Shape):
    id: str
    created: str
