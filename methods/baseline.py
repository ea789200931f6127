"""``method=baseline``: the plain backbone, trained with the trainer config.

``storage: true`` adds the weight-compression storage accounting (nonzeros, compression ratio, sparse size;
methods/common/storage.py) to the row, e.g. for evaluating a released sparse model."""
from methods import Method, register_method
from methods.common.storage import storage_metrics


@register_method("baseline")
class Baseline(Method):
    family = "baseline"
    supports_detection = True

    def metrics(self, model) -> dict:
        if not self.cfg.get("storage", False):
            return {}
        return storage_metrics(getattr(model, "module", model), self.cfg.get("index_bits"))
