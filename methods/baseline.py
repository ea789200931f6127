"""``method=baseline``: the plain backbone, trained with the trainer config."""
from methods import Method, register_method


@register_method("baseline")
class Baseline(Method):
    family = "baseline"
