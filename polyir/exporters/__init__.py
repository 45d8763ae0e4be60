"""torch -> Graph (polyir.exporters.fx: torch.fx tracing with a handler registry) and NIR -> Graph
(polyir.exporters.nir). `handler` / `register` extend the torch exporter:

    @polyir.exporters.handler(MyModule)
    def _mine(ctx, name, module, values):
        return polyir.Affine(...)
"""
from .handlers import HANDLERS, handler, recogniser, register

__all__ = ["handler", "register", "recogniser", "HANDLERS"]
