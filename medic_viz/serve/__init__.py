"""``medic-viz serve``: the workbench and the workshop as web apps, one kernel per participant,
sharing one machine fairly (a run queue the server owns, torch threads per kernel, a seat limit).

- :mod:`medic_viz.serve.config`: the host's offer (models by name, device, seats, runs at once);
- :mod:`medic_viz.serve.server`: the Voilà server (:class:`~medic_viz.serve.server.WorkshopServer`);
- :mod:`medic_viz.run_queue`: the queue, shared by the kernels through ``flock``-ed files.

The pages themselves are views: :mod:`medic_viz.widgets.apps.served`.
"""

from medic_viz.serve.config import PAGES, ServeConfig, resolve_models
from medic_viz.serve.server import LOCALHOST, WorkshopServer, check_port

__all__ = ["PAGES", "ServeConfig", "resolve_models", "WorkshopServer", "check_port", "LOCALHOST"]
