"""The policy room: model, loading with positions, checks, compile, render, diff, interop."""

from fiduciary.policy.compile import CompiledPolicy, compile_policy
from fiduciary.policy.load import LoadedPolicy, load_policy, load_policy_text
from fiduciary.policy.model import Policy
from fiduciary.policy.problems import PolicyError, Problem

__all__ = [
    "CompiledPolicy",
    "LoadedPolicy",
    "Policy",
    "PolicyError",
    "Problem",
    "compile_policy",
    "load_policy",
    "load_policy_text",
]
