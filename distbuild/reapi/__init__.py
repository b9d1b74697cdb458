"""The Remote Execution API v2 at the wire: storage servicers and REAPI clients.

Servicers (thin: unpack, call plain logic, pack): ``cas_service`` (ContentAddressableStorage,
ByteStream, ActionCache, and our CasAdmin listing) over ``storage.StorageFrontend``, and
``capabilities`` (what a server advertises). The Execution servicer lives with the scheduler
(``distbuild/scheduler/execution_service.py``).

Clients, each taking a channel, an instance name and a digest function, so they work against
our scheduler or any REAPI server: ``cas_client.RemoteCAS``, ``action_cache_client
.RemoteActionCache``, ``execution_client.ExecutionClient`` and
``capabilities.fetch_capabilities``.

``convert`` maps service messages to the dataclasses of ``distbuild.actions``; the bytes that
are hashed (Command, Directory, Action) are ``distbuild.codec``'s business.
"""
