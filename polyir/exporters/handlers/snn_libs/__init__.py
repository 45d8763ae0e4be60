"""Export handlers for the neurons of snnTorch, Norse and sinabs, straight from their torch modules
(no NIR file in between), one module per library. No library is imported: a module is recognised
by its class name and attributes. docs/spiking.md says what each library computes."""
from . import norse, sinabs, snntorch  # noqa: F401 - importing registers the recognisers
