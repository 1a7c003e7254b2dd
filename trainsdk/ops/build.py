"""``python -m trainsdk.ops.build``: build (or find up to date) the compiled extension; used by ``make setup``.

Exits non-zero when the build fails, so set-up and CI stop there, unless ``MEDCNN_NO_EXT=1`` asks for the
pure-PyTorch reference instead.
"""
from __future__ import annotations

import sys
import warnings

from ._extension import extension_status


def main() -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the status line below says the same
        status = extension_status()
    print(status)
    if status.error is not None:
        print(status.error[-4000:], file=sys.stderr)
        print("hint: install a C++ compiler with OpenMP and ninja, or set MEDCNN_NO_EXT=1", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
