"""Bring older NetParameter forms up to date, as Caffe's UpgradeNetAsNeeded (upgrade_proto)
does on load.

In Caffe's order: V0 layers → V1 layers (``v0``), V1 ``layers`` → ``layer`` with the old
data-transform fields moved to transform_param (``v1``), the net-level
``input``/``input_shape``/``input_dim`` fields → an Input layer (``net_input``). Unlike Caffe,
BatchNorm layers with three learned param specs are not silently frozen: the layer rejects
them. ``proto_file`` upgrades a net file on disk (tools/upgrade_net_proto_text.py).
"""
import logging

from .net_input import upgrade_net_input
from .v0 import net_is_v0, upgrade_v0_net
from .v1 import upgrade_v1_net

log = logging.getLogger("minicaffe")


def upgrade_net(param, source="<net>"):
    """Upgrade ``param`` in place; returns it."""
    if net_is_v0(param):
        upgrade_v0_net(param)
        log.info("%s: upgraded V0 layer definitions to V1", source)
    if len(param.layers):
        upgrade_v1_net(param)
        log.info("%s: upgraded V1 'layers' to 'layer'", source)
    upgrade_net_input(param)
    # Caffe's UpgradeNetBatchNorm silently zeroes lr_mult on BatchNorm layers with three
    # param specs; minicaffe rejects a learned statistic instead (the layer names it), so a
    # solver can never be told to train the running averages.
    return param
