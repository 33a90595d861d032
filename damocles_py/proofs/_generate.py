"""Child process of `params.generate`: generates one circuit's parameters into FIL_PROOFS_PARAMETER_CACHE."""

import sys

from damocles_py import _core

if __name__ == "__main__":
    circuit, sector_size = sys.argv[1], int(sys.argv[2])
    _core.generate_params(circuit, sector_size)
