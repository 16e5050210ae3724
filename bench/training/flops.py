"""FLOP measurement of real training steps with torch's FlopCounterMode.

Convention: FLOPs of matrix products, convolutions and attention counted from op shapes, forward
and backward, 2 per multiply-add (torch.utils.flop_counter); elementwise work counts 0.
Not 6ND, which leaves out the LM head that CWT removes.
"""

from collections.abc import Callable

import torch
from torch.utils.flop_counter import (
    FlopCounterMode,
    register_flop_formula,
    sdpa_backward_flop_count,
    sdpa_flop_count,
)

_aten = torch.ops.aten


def _register_cpu_attention() -> None:
    """torch counts the GPU attention kernels but not the CPU flash kernel (it would count 0).

    The CPU kernel computes the same products, so it takes the same formulas; without this a
    FLOPs budget would buy more steps on a CPU than on a GPU for the same model.
    """

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    @register_flop_formula(_aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None,
                  **kwargs) -> int:
        return sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


_register_cpu_attention()


def count_flops(step: Callable[[], object]) -> int:
    """FLOPs executed by `step()` (typically a forward and backward of one micro-batch)."""
    with FlopCounterMode(display=False) as counter:
        step()
    return int(counter.get_total_flops())


def count_flops_abstract(step: Callable[[], object]) -> int:
    """FLOPs of `step()` run on fake tensors: shapes only, no memory, no arithmetic.

    Fake tensors keep the CPU device, so attention takes the same kernel (and formula) as a real
    CPU step; a plan for a model far too big for this machine still gets exact step costs.
    Build the model inside `step` so its parameters are fake too.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        return count_flops(step)
