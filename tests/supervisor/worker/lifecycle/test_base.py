"""`base.Core` is what the message and recycle rules may use of `Lifecycle`: it must list
members that the core really has, or the parts are typed against something that is not there."""

from __future__ import annotations

from supervisor.worker.lifecycle import base
from supervisor.worker.lifecycle.core import Lifecycle
from supervisor.worker.lifecycle.events import Limits

PROTOCOL_OWN = {"_abc_impl", "_is_protocol"}  # typing.Protocol's own


def members() -> set[str]:
    declared = set(vars(base.Core)) | set(base.Core.__annotations__)
    return {m for m in declared if not (m.startswith("__") and m.endswith("__")) and m not in PROTOCOL_OWN}


def test_every_member_of_the_protocol_is_on_a_lifecycle():
    core = Lifecycle(Limits())
    assert len(members()) > 20
    assert sorted(m for m in members() if not hasattr(core, m)) == []


def test_the_protocol_names_what_the_parts_use():
    # What the parts call that is neither theirs nor listed would be an untyped reach into the core.
    import ast
    import inspect

    from supervisor.worker.lifecycle import messages, recycle

    own = {name for cls in (messages.WorkerMessages, recycle.Recycling) for name in vars(cls)}
    used = set()
    for module in (messages, recycle):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self":
                used.add(node.attr)
    assert sorted(used - own - members()) == []

