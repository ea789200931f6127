"""``l1_prune``: the L1-norm filter pruning baseline (Li et al., "Pruning Filters for Efficient ConvNets", 2017).

Per channel group, keep the filters with the largest L1 norm (summed over the group's producers),
cut the rest physically (``prune_channels``, weights carried over) and fine-tune. The kept widths come from
either ``rates`` (a DCFF-layout per-layer rate string, so the compact architecture — and its FLOPs — equal a
DCFF model's exactly) or ``flops_reduction`` (a target share of FLOPs removed, reached by one uniform rate over
the ``scope`` groups, found by bisection on the suite's counter; used to match another method's FLOPs).
"""
from __future__ import annotations

import copy

from methods import Method, register_method
from methods.common.channel_pruning import (SCOPES, apply_channel_config, channel_groups, counts_from_rates,  # noqa: F401
                                            filter_l1, kept_width, prune_channels, reinit_rule, reinitialize,
                                            scope_groups, top_k, uniform_rate_for_flops)
from methods.common.pruning_report import compression_report


@register_method("l1_prune")
class L1Prune(Method):
    family = "prune"
    supports_detection = True

    def __init__(self, cfg):
        super().__init__(cfg)
        if (cfg.get("rates") is None) == (cfg.get("flops_reduction") is None):
            raise ValueError("l1_prune needs exactly one of method.rates (per-layer rate string) or "
                             "method.flops_reduction (share of FLOPs to remove, e.g. 0.5588)")
        self.init = cfg.get("init", "inherit")
        if self.init not in ("scratch", "inherit"):
            raise ValueError(f"method.init={self.init!r}; choose inherit (fine-tune, default) or scratch")
        self.reinit = reinit_rule(cfg)
        self.config = None
        self.rate = None
        self._dense = None
        self._input_shape = None

    def transform(self, model, ctx):
        self._input_shape = (ctx.in_channels, ctx.image_size, ctx.image_size)
        self._dense = copy.deepcopy(model)
        if self.config is not None:
            return apply_channel_config(model, self.config)
        spec = channel_groups(model)
        if self.cfg.get("rates") is not None:
            counts = counts_from_rates(model, self.cfg.rates, spec)
        else:
            self.rate = uniform_rate_for_flops(model, float(self.cfg.flops_reduction), self._input_shape,
                                               self.cfg.get("scope", "inner"))
            counts = {n: kept_width(spec[n].width, self.rate) for n in scope_groups(spec, self.cfg.get("scope", "inner"))}
        keep = {n: top_k(filter_l1(model, spec[n]), k).tolist() for n, k in counts.items() if k < spec[n].width}
        compact = prune_channels(model, keep, spec)
        if self.init == "scratch":
            reinitialize(compact, self.generator, self.reinit)
        self.config = compact.channel_config
        return compact

    def metrics(self, model):
        out = {"channel_config": self.config, "init": self.init, "uniform_rate": self.rate,
               "rates": None if self.cfg.get("rates") is None else str(self.cfg.rates)}
        if self._dense is not None and self._input_shape is not None:
            out.update(compression_report(self._dense, model, self._input_shape, self.cfg.get("latency")))
        return out

    def state_dict(self):
        return {**super().state_dict(), "config": self.config, "rate": self.rate}

    def load_state_dict(self, state):
        super().load_state_dict(state)
        self.config = state.get("config")
        self.rate = state.get("rate")
