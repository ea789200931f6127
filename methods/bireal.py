"""``method=bireal``: Bi-Real Net (Liu et al. 2018) on the binary backbones.

Bi-Real's pieces: a shortcut around every binary conv (the ``bireal_*`` backbones), the ApproxSign
activation estimator (derivative 2+2x on [-1, 0), 2-2x on [0, 1), 0 elsewhere; sd_bnn.md / ir2net.md),
and magnitude-aware weights mean|w_c| * sign(w) with the clipped STE (``scaling=bireal``): as in the official
Bi-Real code (liuzechun/Bi-Real-net, pytorch_implementation) the scale is detached and folded into the weight, so
the weight gradient is the clipped STE's alone, not scaled by mean|w_c| (``scaling=mean_abs`` gives XNOR's form).
"""
from methods import register_method
from methods.common.binary import BinaryMethod


@register_method("bireal")
class BiReal(BinaryMethod):
    default_spec = {"act_estimator": "approx", "weight_estimator": "clipped", "scaling": "bireal"}
