"""Fiduciary: privacy promises as code.

The policy is written once as ``policy.yaml`` on the fideslang taxonomy; everything else
reads the compiled policy. The core is a library; the CLI and the web are thin adapters.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["CompiledPolicy", "PolicyError", "__version__", "compile_policy", "load_policy"]

if TYPE_CHECKING:
    from fiduciary.policy import CompiledPolicy, PolicyError, compile_policy, load_policy


def __getattr__(name: str) -> Any:
    # Imported on first use, so that `fiduciary --help` and entry points stay fast.
    if name in __all__:
        import fiduciary.policy as policy

        return getattr(policy, name)
    raise AttributeError(f"module 'fiduciary' has no attribute {name!r}")
