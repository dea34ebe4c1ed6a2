"""Test-session settings that must be in place before any module is imported.

CI and the dev machines have no GPU: the Triton kernels run under Triton's interpreter, which
reads TRITON_INTERPRET when the kernels are first imported. A GPU run sets TRITON_INTERPRET=0
(tools/gpu_checks.sh) to test the compiled kernels instead.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
