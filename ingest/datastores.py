"""Naming the target datastore by id or by name, creating it on request."""

from __future__ import annotations

from uuid import UUID

from service.client import Client, pb


class UnknownDatastore(Exception):
    """No datastore of that name belongs to the caller."""


def _is_uuid(value: str) -> bool:
    try:
        UUID(value)
    except ValueError:
        return False
    return True


def find_by_name(client: Client, name: str) -> pb.Datastore | None:
    token = ""
    while True:
        page = client.datastores.ListDatastores(
            pb.ListDatastoresRequest(page_size=500, page_token=token)
        )
        for datastore in page.datastores:
            if datastore.name == name:
                return datastore
        token = page.next_page_token
        if not token:
            return None


def resolve_datastore(client: Client, ref: str, *, create: bool = False) -> pb.Datastore:
    """The datastore ``ref`` names (an id, or a name of the caller's).

    With ``create``, a name that does not exist yet becomes a new datastore
    with the server's defaults; raises UnknownDatastore otherwise.
    """
    if _is_uuid(ref):
        return client.datastores.GetDatastore(pb.GetDatastoreRequest(id=ref))
    found = find_by_name(client, ref)
    if found is not None:
        return found
    if not create:
        raise UnknownDatastore(f"no datastore named {ref!r}; pass --create to create it")
    return client.datastores.CreateDatastore(pb.CreateDatastoreRequest(name=ref))
