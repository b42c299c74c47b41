"""Checks of bound values, raised where a value is bound, naming the binding."""


def require_int(binding, value, low):
  """`value` as an integer >= low, or a ValueError naming the binding (gin's or a flag)."""
  if isinstance(value, bool) or not isinstance(value, int) or value < low:
    raise ValueError(f'{binding} must be an integer >= {low}; got {value!r}')
  return value
