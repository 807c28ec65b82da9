"""Fiduciary: privacy promises as code.

The policy is written once as ``policy.yaml`` on the fideslang taxonomy; everything else
reads the compiled policy. The core is a library; the CLI and the web are thin adapters.
"""

from fiduciary.policy import CompiledPolicy, PolicyError, compile_policy, load_policy

__version__ = "0.1.0"
__all__ = ["CompiledPolicy", "PolicyError", "__version__", "compile_policy", "load_policy"]
