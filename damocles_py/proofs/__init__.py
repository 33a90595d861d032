"""The proofs layer: typed sealing stages over the real filecoin-proofs library (see api.py)."""

from damocles_py.proofs import params as params

params.configure_environment()  # before any library call: its settings are read once

from damocles_py.proofs.api import (  # noqa: E402
    add_piece,
    build_tree_d,
    c1,
    c2,
    cc_pieces,
    clear_cache,
    compute_comm_d,
    fill_pieces,
    pc1,
    pc2,
    piece_commitment,
    snap_encode,
    snap_partition_proofs,
    snap_prove,
    snap_verify,
    snap_verify_partition_proofs,
    unseal_range,
    verify_seal,
)
from damocles_py.proofs.errors import InvalidInput, ParametersMissing, ProofsError  # noqa: E402
from damocles_py.proofs.types import (  # noqa: E402
    C1Output,
    PC1Output,
    PC2Output,
    PieceInfo,
    SealProof,
    SectorSize,
    SnapEncodeOutput,
    UpdateProof,
    padded_piece_size,
    prover_id_from_miner,
    unpadded_piece_size,
)

__all__ = [
    "add_piece", "build_tree_d", "c1", "c2", "cc_pieces", "clear_cache", "compute_comm_d", "fill_pieces", "pc1",
    "pc2", "piece_commitment", "snap_encode", "snap_partition_proofs", "snap_prove", "snap_verify",
    "snap_verify_partition_proofs", "unseal_range", "verify_seal", "InvalidInput",
    "ParametersMissing", "ProofsError", "C1Output", "PC1Output", "PC2Output", "PieceInfo",
    "SealProof", "SectorSize", "SnapEncodeOutput", "UpdateProof", "padded_piece_size",
    "prover_id_from_miner", "unpadded_piece_size", "params",
]
