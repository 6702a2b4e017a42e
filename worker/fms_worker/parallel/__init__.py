"""Process-group state and collectives. Tensor parallelism: rank/size are 0/1 until a group is set up."""

from fms_worker.parallel.state import ParallelState, get_parallel_state, set_parallel_state
from fms_worker.parallel.comm import tp_all_gather, tp_all_reduce, tp_tree_sum

__all__ = ["ParallelState", "get_parallel_state", "set_parallel_state", "tp_all_gather", "tp_all_reduce", "tp_tree_sum"]
