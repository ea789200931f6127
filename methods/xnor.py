"""``method=xnor``: XNOR-Net weight scaling (Rastegari et al. 2016) on the binary backbones.

out = conv(sign(a), sign(w)) * alpha_c with alpha_c = mean |w_c| per output channel (``scaling=mean_abs``);
clipped STE backward. XNOR-Net's spatial activation scale K is not modelled (the binary-network papers
compared here drop it as well); its per-channel weight scale is the part they compare against.
"""
from methods import register_method
from methods.common.binary import BinaryMethod


@register_method("xnor")
class XNOR(BinaryMethod):
    default_spec = {"act_estimator": "clipped", "weight_estimator": "clipped", "scaling": "mean_abs"}
