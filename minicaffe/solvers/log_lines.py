"""The solver's log lines in Caffe's words and number format, which log parsers (Caffe's
``tools/extra/parse_log.py``, ``minicaffe.log_parser``) key on."""
import logging

log = logging.getLogger("minicaffe")


def cpp_float(x):
    """A number as C++ streams print a float (6 significant digits), e.g. 0.01, 1e-05."""
    return "%g" % float(x)


def log_net_outputs(kind, net, values):
    """``    <kind> net output #i: name = v`` for each value of each output blob, with the
    weighted loss where the blob carries a loss weight; ``values`` are per output blob."""
    index = 0
    for name, blob_values in zip(net.outputs, values):
        weight = net.blob_loss_weights[name]
        for v in blob_values:
            extra = f" (* {cpp_float(weight)} = {cpp_float(weight * v)} loss)" if weight else ""
            log.info("    %s net output #%d: %s = %s%s", kind, index, name, cpp_float(v), extra)
            index += 1
