"""Declaring a node's parameters from one table, the same way in every LAM node."""
from __future__ import annotations

from typing import Any, Callable

from rcl_interfaces.msg import ParameterDescriptor


def declare_parameters(node, table: dict[str, tuple[Any, str]]) -> Callable[[str], Any]:
    """Declare each ``name: (default, description)`` and return a getter.

    Parameters use dynamic typing so YAML written as ``1`` for a float parameter is accepted;
    the getter coerces every value to its default's type (lists element-wise) and raises
    ValueError naming the parameter when that is impossible. An empty YAML list arrives unset and
    reads as an empty list.
    """
    for name, (default, text) in table.items():
        node.declare_parameter(name, default, ParameterDescriptor(description=text, dynamic_typing=True))

    def get(name: str) -> Any:
        value = node.get_parameter(name).value
        default = table[name][0]
        if value is None:
            return type(default)()
        try:
            if isinstance(default, bool):
                return bool(value)
            if isinstance(default, (int, float)):
                return type(default)(value)
            if isinstance(default, list):
                return [type(default[0])(v) for v in value] if default else list(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"parameter {name} has a value of the wrong type: {value!r}") from exc
        return value

    return get
