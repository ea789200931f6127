"""``method=irnet``: IR-Net (Qin et al. CVPR 2020), the CIFAR baseline SD-BNN builds on (sd_bnn.md).

- EDE (Error Decay Estimator) for weights and activations with shared k, t:
  d sign(x)/dx ~ k * t * (1 - tanh^2(t x)), t = 10^(log10 Tmin + (log10 Tmax - log10 Tmin) * epoch/epochs),
  k = max(1/t, 1), updated every epoch (``ede: {tmin, tmax}``; defaults 1e-3, 1e1 as for ResNet-20/18).
- Libra-PB weights: per output channel w_std = (w - mean) / std, b_w = sign(w_std) scaled by the bit-shift
  2^round(log2 mean|w_std|) (``standardize=libra``, ``scaling=pow2``). Libra-PB comes from the IR-Net paper,
  not from the notes here; ``binary.standardize=none binary.scaling=none`` gives the "sign + EDE" baseline
  that sd_bnn.md's small-scale check names.
"""
from methods import register_method
from methods.common.binary import BinaryMethod


@register_method("irnet")
class IRNet(BinaryMethod):
    default_spec = {"act_estimator": "ede", "weight_estimator": "ede", "standardize": "libra", "scaling": "pow2"}
