"""A one-file test plugin that SIGKILLs its own process at the Nth call of one function.

``HARNESS_TEST_KILL_AT=module:Qualified.name:N`` (e.g. ``harness.store:Store.add_result:3``) wraps that
function when the plugin is loaded; the Nth call kills the process before the original runs.  No cleanup
handler runs, as when a node dies.  It registers no hooks.
"""

import importlib
import os
import signal

_spec = os.environ.get("HARNESS_TEST_KILL_AT")
if _spec:
    _module_name, _qualified, _count = _spec.split(":")
    _owner = importlib.import_module(_module_name)
    *_path, _attribute = _qualified.split(".")
    for _part in _path:
        _owner = getattr(_owner, _part)
    _original = getattr(_owner, _attribute)
    _calls = [0]

    def _killing(*args, **kwargs):
        _calls[0] += 1
        if _calls[0] == int(_count):
            os.kill(os.getpid(), signal.SIGKILL)
        return _original(*args, **kwargs)

    setattr(_owner, _attribute, _killing)
