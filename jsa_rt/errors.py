"""User-facing errors: one line that names the problem and the fix.

Library code raises `JsaError`; the CLI prints its message (no traceback) and exits with 2.
"""


class JsaError(Exception):
    """An error the user can fix; its message is one line: what is wrong, and what to do."""


class CheckpointError(JsaError):
    pass


class InputError(JsaError):
    pass


class DeviceError(JsaError):
    """Camera / microphone / GPU problems."""


class EngineError(JsaError):
    pass
