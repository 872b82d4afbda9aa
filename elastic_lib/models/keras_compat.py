"""Every use of Keras' private API, in one file: a Keras upgrade that moves one of these touches
only this module (``tests/test_architecture.py`` fails if another module reaches for one).

Written against Keras 3.15 (``keras/src/ops/node.py``, ``keras/src/models/functional.py``,
``keras/src/trainers/trainer.py``):

- a symbolic tensor's ``_keras_history`` names the operation (layer) that produced it;
- a layer's ``_inbound_nodes`` are its calls, in order (the first: its place in the model it was
  built in);
- ``Functional._run_through_graph`` replays a model's graph on new inputs, each operation mapped
  by a function (``keras.models.clone_model`` does the same, but re-creates the inputs);
- ``Model._initial_epoch`` is the epoch ``fit`` starts from (``keras.callbacks.BackupAndRestore``
  sets it to resume).
"""

from __future__ import annotations


def producer(tensor):
    """The layer (operation) that produced a symbolic tensor; None for a tensor with no history."""
    history = getattr(tensor, "_keras_history", None)
    return history.operation if history else None


def calls(layer) -> list:
    """The layer's calls (``keras.src.ops.node.Node``s), in order; empty if it was never called."""
    return layer._inbound_nodes


def first_call(layer):
    """The layer's first call (a ``keras.src.ops.node.Node``): its place in the model it was built in."""
    return layer._inbound_nodes[0]


def replay(model, inputs, operation_fn):
    """The outputs of ``model``'s graph applied to ``inputs``, every layer replaced by
    ``operation_fn(layer)``."""
    return model._run_through_graph(inputs, operation_fn=operation_fn)


def set_initial_epoch(model, epoch: int | None) -> None:
    """The epoch the next ``fit`` starts from (None: its ``initial_epoch`` argument), as
    ``keras.callbacks.BackupAndRestore`` sets it."""
    model._initial_epoch = epoch
