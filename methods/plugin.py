"""Registers the built-in erasure methods.

Registration is lazy ("module:Class" strings with a name and one-line description),
so `harness list` imports no torch.  Add one line per method module.
"""

from harness.hookspecs import hookimpl


@hookimpl
def register_methods(register):
    register("methods.sd:NoErasure", name="sd", description="the unmodified base model (no erasure); the baseline row")
