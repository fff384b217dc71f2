"""Run a ServerApp and a ClientApp in this process, without Ray: Flower's own simulation
runtime (its in-memory LinkState, ``InMemoryGrid`` and the virtual client engine's
``run_api`` workers, as ``flwr.simulation.run_simulation`` assembles them) with a backend
that calls the ClientApp in the calling process instead of in Ray actors.

``run_simulation`` spends most of a small federation's time starting Ray; this path starts
in milliseconds, which is what the tests, ``scripts/fl-demo`` and the ``fl`` benchmark use.
It reaches into flwr's simulation modules (``vce_api``), which is why the ``flower`` extra
pins flwr to 1.42.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Mapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.clientapp.client_app import ClientAppException
from flwr.common.constant import SUPERLINK_NODE_ID
from flwr.proto.task_pb2 import Task
from flwr.server.superlink.fleet.vce import vce_api
from flwr.server.superlink.fleet.vce.backend.backend import Backend
from flwr.server.superlink.fleet.vce.metrics import VceMetrics
from flwr.server.superlink.linkstate import LinkStateFactory
from flwr.server.superlink.linkstate.in_memory_linkstate import RunRecord
from flwr.serverapp import ServerApp
from flwr.supercore.constant import FLWR_IN_MEMORY_DB_NAME, NOOP_FEDERATION_ID
from flwr.supercore.object_store import ObjectStoreFactory
from flwr.supercore.run import Run
from flwr.supercore.task_identity import TaskIdentity
from flwr.superlink.federation import NoOpFederationManager
from flwr.superlink.grid import InMemoryGrid

__all__ = ["run_inprocess"]


class _InProcessBackend(Backend):
    """One worker that runs the ClientApp in this process."""

    def __init__(self) -> None:
        self.app_fn: Callable[[], ClientApp] | None = None

    def build(self, app_fn: Callable[[], ClientApp]) -> None:
        self.app_fn = app_fn

    @property
    def num_workers(self) -> int:
        return 1

    def is_worker_idle(self) -> bool:
        return True

    def terminate(self) -> None:
        pass

    def process_message(self, message: Message, context: Context) -> tuple[Message, Context]:
        assert self.app_fn is not None
        try:
            return self.app_fn()(message=message, context=context), context
        except Exception as ex:  # reported to the server as a failed reply, as Ray's actors do
            raise ClientAppException(str(ex)) from ex


def run_inprocess(server_app: ServerApp, client_app: ClientApp, num_supernodes: int, *,
                  node_configs: Mapping[int, Mapping[str, Any]] | None = None,
                  run_config: Mapping[str, Any] | None = None) -> Context:
    """Run a federation of ``num_supernodes`` clients to the end; returns the ServerApp's
    context. ``node_configs[partition_id]`` is added to that node's config (as a
    SuperNode's ``--node-config``), ``run_config`` to every context's run config. An
    exception raised by the ServerApp is raised here."""
    state_factory = LinkStateFactory(FLWR_IN_MEMORY_DB_NAME, NoOpFederationManager(), ObjectStoreFactory())
    run = Run.create_empty(run_id=secrets.randbits(63))
    run.primary_task_id = secrets.randbits(63)
    run.federation_id = NOOP_FEDERATION_ID
    # As run_simulation does for its in-process ServerApp: the task identity messages carry.
    TaskIdentity.task_id = 1
    TaskIdentity.run_id = run.run_id
    TaskIdentity.node_id = SUPERLINK_NODE_ID
    state = state_factory.state()
    state.run_ids[run.run_id] = RunRecord(run=run)  # type: ignore[attr-defined]
    state.task_store[run.primary_task_id] = Task(task_id=run.primary_task_id, run_id=run.run_id)  # type: ignore[attr-defined]
    grid = InMemoryGrid(state_factory=state_factory, pull_interval=0.005)
    grid.set_run(run)

    nodes = vce_api._register_nodes(num_nodes=num_supernodes, state_factory=state_factory)
    stores = vce_api._register_node_info_stores(nodes_mapping=nodes, run=run)
    extra_run = dict(run_config or {})
    for node_id, partition in nodes.items():
        info = stores[node_id].run_infos[run.run_id]
        info.context.node_config.update((node_configs or {}).get(partition, {}))
        info.context.run_config.update(extra_run)
        info.initial_run_config.update(extra_run)

    server_ctx = Context(run_id=run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config=extra_run)
    f_stop = threading.Event()
    failure: list[BaseException] = []

    def serve() -> None:
        try:
            server_app(grid=grid, context=server_ctx)
        except BaseException as e:  # handed to the caller below
            failure.append(e)
        finally:
            f_stop.set()

    thread = threading.Thread(target=serve, name="provledger-serverapp", daemon=True)
    thread.start()
    vce_api.run_api(lambda: client_app, _InProcessBackend, nodes, state_factory, stores, f_stop, VceMetrics())
    thread.join()
    if failure:
        raise failure[0]
    return server_ctx
