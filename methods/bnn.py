"""``method=bnn``: the plain binary network (Hubara et al. 2016) on the binary backbones.

out = conv(sign(a), sign(w)), no scaling; backward through sign is the straight-through estimator of
BinaryNet, which cancels the gradient where |x| > 1 (``clipped`` in methods/common/binary.py; set
``binary.act_estimator=ste`` for the unclipped identity). First conv, last FC and 1x1 downsample convs
stay full precision, as in every paper of this family. The baseline of the reduced comparisons.
"""
from methods import register_method
from methods.common.binary import BinaryMethod


@register_method("bnn")
class BNN(BinaryMethod):
    default_spec = {"act_estimator": "clipped", "weight_estimator": "clipped"}
