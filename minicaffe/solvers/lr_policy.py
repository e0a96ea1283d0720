"""Caffe's learning-rate policies (SGDSolver::GetLearningRate): the rate at an iteration from
``base_lr``, ``gamma``, ``power``, ``stepsize``, ``stepvalue`` and ``max_iter``."""
import logging
import math

log = logging.getLogger("minicaffe")

LR_POLICIES = ("fixed", "step", "exp", "inv", "multistep", "poly", "sigmoid")


def lr_policy_problem(p):
    """What is wrong with the policy settings of SolverParameter ``p``, or None."""
    policy = p.lr_policy
    if policy not in LR_POLICIES:
        return (f"unknown lr_policy '{policy}' (one of {', '.join(LR_POLICIES)})" if policy else
                f"lr_policy is not set (one of {', '.join(LR_POLICIES)})")
    if policy in ("step", "sigmoid") and p.stepsize <= 0:
        return f"lr_policy '{policy}' needs a positive stepsize"
    if policy in ("step", "exp", "inv", "multistep", "sigmoid") and p.gamma < 0:
        return f"gamma must not be negative, got {p.gamma}"
    if policy == "poly" and p.max_iter <= 0:
        return "lr_policy 'poly' needs a positive max_iter"
    return None


def learning_rate(p, it, current_step):
    """(rate, current_step) at iteration ``it``; "step" and "multistep" advance the step."""
    policy = p.lr_policy
    if policy == "fixed":
        return p.base_lr, current_step
    if policy == "step":
        current_step = it // p.stepsize
        return p.base_lr * p.gamma ** current_step, current_step
    if policy == "exp":
        return p.base_lr * p.gamma ** it, current_step
    if policy == "inv":
        return p.base_lr * _pow(1.0 + p.gamma * it, -p.power), current_step
    if policy == "multistep":
        if current_step < len(p.stepvalue) and it >= p.stepvalue[current_step]:
            current_step += 1
            log.info("MultiStep Status: Iteration %d, step = %d", it, current_step)
        return p.base_lr * p.gamma ** current_step, current_step
    if policy == "poly":
        return p.base_lr * _pow(1.0 - it / p.max_iter, p.power), current_step
    if policy == "sigmoid":
        z = -p.gamma * (it - p.stepsize)
        return p.base_lr * (0.0 if z > 700 else 1.0 / (1.0 + math.exp(z))), current_step
    raise ValueError(f"unknown lr_policy '{policy}'")


def _pow(base, exponent):
    """C's pow: a negative base with a fractional exponent gives NaN, not a complex number."""
    if base < 0 and exponent != int(exponent):
        return float("nan")
    try:
        return math.pow(base, exponent)
    except (OverflowError, ZeroDivisionError):
        return float("inf")
