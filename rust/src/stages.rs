//! One function per sealing stage over `filecoin-proofs-api`, in plain Rust types.
//!
//! Shaped like filecoin-ffi's `proofs/api.rs`: paths in, commitments and serialized phase outputs
//! out. No policy lives here (no retries, no cleanup decisions, no validation beyond what the types
//! force): that is the Python package's job. Both the PyO3 layer and the pure-Rust stage benchmark
//! call these functions, so the benchmark measures exactly what Python calls.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::Path;

use anyhow::{anyhow, ensure, Context, Result};
use filecoin_proofs::{
    get_base_tree_leafs, get_base_tree_size, DefaultBinaryTree, DefaultPieceHasher, SectorSize,
    StoreConfig,
};
use filecoin_proofs_api::seal::{
    self, SealCommitPhase1Output, SealPreCommitPhase1Output, SealPreCommitPhase2Output,
};
use filecoin_proofs_api::update;
use filecoin_proofs_api::{
    PartitionProofBytes, PieceInfo, RegisteredSealProof, RegisteredUpdateProof, SectorId,
    UnpaddedByteIndex, UnpaddedBytesAmount,
};
use storage_proofs_core::cache_key::CacheKey;
use storage_proofs_core::merkle::{create_base_merkle_tree, BinaryMerkleTree};

pub type Bytes32 = [u8; 32];

/// A piece as the proofs library sees it: commitment and unpadded size.
#[derive(Clone, Copy, Debug)]
pub struct Piece {
    pub commitment: Bytes32,
    pub size: u64,
}

/// Parses a seal proof by its library name, e.g. `StackedDrg2KiBV1_1`.
pub fn seal_proof(name: &str) -> Result<RegisteredSealProof> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| anyhow!("unknown seal proof type {name:?}"))
}

/// Parses an update (SnapDeals) proof by its library name, e.g. `StackedDrg2KiBV1`.
pub fn update_proof(name: &str) -> Result<RegisteredUpdateProof> {
    serde_json::from_value(serde_json::Value::String(name.to_owned()))
        .map_err(|_| anyhow!("unknown update proof type {name:?}"))
}

fn piece_infos(pieces: &[Piece]) -> Result<Vec<PieceInfo>> {
    pieces
        .iter()
        .map(|p| PieceInfo::new(p.commitment, UnpaddedBytesAmount(p.size)))
        .collect()
}

/// The file's bytes, zero-extended to exactly `piece_size` unpadded bytes.
fn open_piece(path: &Path, piece_size: u64) -> Result<impl Read> {
    let file =
        File::open(path).with_context(|| format!("cannot open piece file {}", path.display()))?;
    let len = file.metadata()?.len();
    ensure!(
        len <= piece_size,
        "piece file {} holds {len} bytes, more than the piece size {piece_size}",
        path.display()
    );
    Ok(file.chain(io::repeat(0)).take(piece_size))
}

// ---------------------------------------------------------------------------------------------
// Pieces

/// Piece commitment (commP) of a file zero-extended to `piece_size` unpadded bytes.
pub fn piece_commitment(proof: RegisteredSealProof, path: &Path, piece_size: u64) -> Result<Bytes32> {
    let source = open_piece(path, piece_size)?;
    let info = seal::generate_piece_commitment(proof, source, UnpaddedBytesAmount(piece_size))?;
    Ok(info.commitment)
}

/// Appends one piece to the staged sector file (Fr32 padding, left alignment with zero padding
/// after the `existing` pieces). Returns the piece commitment and the unpadded bytes written.
pub fn add_piece(
    proof: RegisteredSealProof,
    piece_path: &Path,
    staged_path: &Path,
    piece_size: u64,
    existing: &[u64],
) -> Result<(Bytes32, u64)> {
    let source = open_piece(piece_path, piece_size)?;
    let target = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(staged_path)
        .with_context(|| format!("cannot open staged file {}", staged_path.display()))?;
    let existing: Vec<UnpaddedBytesAmount> =
        existing.iter().copied().map(UnpaddedBytesAmount).collect();
    let (info, written) =
        seal::add_piece(proof, source, target, UnpaddedBytesAmount(piece_size), &existing)?;
    Ok((info.commitment, written.0))
}

/// Data commitment of a sector holding `pieces` (zero padding fills the rest).
pub fn compute_comm_d(proof: RegisteredSealProof, pieces: &[Piece]) -> Result<Bytes32> {
    seal::compute_comm_d(proof, &piece_infos(pieces)?)
}

/// Commitment of an all-zero piece of `size` unpadded bytes.
pub fn zero_piece_commitment(size: u64) -> Result<Bytes32> {
    Ok(filecoin_proofs::pieces::zero_padding(UnpaddedBytesAmount(size))?.commitment)
}

// ---------------------------------------------------------------------------------------------
// TreeD

/// Builds the sector's binary SHA-256 data tree as `sc-02-data-tree-d.dat` in `cache_dir`, the
/// file PC1 (and snap encode) then load instead of rebuilding. `staged_path = None` builds the
/// tree of an all-zero (CC) sector. Returns comm_d, the tree's root.
pub fn build_tree_d(
    proof: RegisteredSealProof,
    staged_path: Option<&Path>,
    cache_dir: &Path,
) -> Result<Bytes32> {
    let sector_size = u64::from(proof.sector_size());
    let base_tree_size = get_base_tree_size::<DefaultBinaryTree>(SectorSize(sector_size))?;
    let leafs = get_base_tree_leafs::<DefaultBinaryTree>(base_tree_size)?;
    let config = StoreConfig::new(cache_dir, CacheKey::CommDTree.to_string(), 0);

    let build = |data: &[u8]| -> Result<Bytes32> {
        ensure!(
            data.len() as u64 == sector_size,
            "staged data is {} bytes, the sector is {sector_size}",
            data.len()
        );
        let tree = create_base_merkle_tree::<BinaryMerkleTree<DefaultPieceHasher>>(
            Some(config.clone()),
            leafs,
            data,
        )?;
        let mut comm_d = [0u8; 32];
        comm_d.copy_from_slice(tree.root().as_ref());
        Ok(comm_d)
    };

    match staged_path {
        Some(path) => {
            let file = File::open(path)
                .with_context(|| format!("cannot open staged file {}", path.display()))?;
            // Safety: the staged file is owned by this sector and not written during TreeD.
            let map = unsafe { memmap2::Mmap::map(&file) }
                .with_context(|| format!("cannot map staged file {}", path.display()))?;
            build(&map)
        }
        None => {
            // Anonymous maps are zero-filled lazily, so a CC tree needs no zero buffer in RAM.
            let map = memmap2::MmapMut::map_anon(sector_size as usize)?;
            build(&map)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Sealing

/// PC1. `in_path = None` seals an all-zero sector (the library's `/dev/zero` path).
/// Returns the serialized (JSON) PC1 output.
#[allow(clippy::too_many_arguments)]
pub fn pc1(
    proof: RegisteredSealProof,
    cache_dir: &Path,
    in_path: Option<&Path>,
    sealed_path: &Path,
    prover_id: Bytes32,
    sector_id: u64,
    ticket: Bytes32,
    pieces: &[Piece],
) -> Result<Vec<u8>> {
    let dev_zero = Path::new("/dev/zero");
    let out = seal::seal_pre_commit_phase1(
        proof,
        cache_dir,
        in_path.unwrap_or(dev_zero),
        sealed_path,
        prover_id,
        SectorId::from(sector_id),
        ticket,
        &piece_infos(pieces)?,
    )?;
    Ok(serde_json::to_vec(&out)?)
}

/// PC2 from a serialized PC1 output. Returns (comm_r, comm_d).
pub fn pc2(pc1_output: &[u8], cache_dir: &Path, sealed_path: &Path) -> Result<(Bytes32, Bytes32)> {
    let pc1: SealPreCommitPhase1Output =
        serde_json::from_slice(pc1_output).context("PC1 output is not valid")?;
    let out = seal::seal_pre_commit_phase2(pc1, cache_dir, sealed_path)?;
    Ok((out.comm_r, out.comm_d))
}

/// C1. Returns the serialized (JSON) C1 output.
#[allow(clippy::too_many_arguments)]
pub fn c1(
    proof: RegisteredSealProof,
    cache_dir: &Path,
    sealed_path: &Path,
    prover_id: Bytes32,
    sector_id: u64,
    ticket: Bytes32,
    seed: Bytes32,
    comm_r: Bytes32,
    comm_d: Bytes32,
    pieces: &[Piece],
) -> Result<Vec<u8>> {
    let pre_commit = SealPreCommitPhase2Output { registered_proof: proof, comm_r, comm_d };
    let out = seal::seal_commit_phase1(
        cache_dir,
        sealed_path,
        prover_id,
        SectorId::from(sector_id),
        ticket,
        seed,
        pre_commit,
        &piece_infos(pieces)?,
    )?;
    Ok(serde_json::to_vec(&out)?)
}

/// C2 (the Groth16 SNARK) from a serialized C1 output. Returns the proof bytes.
pub fn c2(c1_output: &[u8], prover_id: Bytes32, sector_id: u64) -> Result<Vec<u8>> {
    let c1: SealCommitPhase1Output =
        serde_json::from_slice(c1_output).context("C1 output is not valid")?;
    Ok(seal::seal_commit_phase2(c1, prover_id, SectorId::from(sector_id))?.proof)
}

#[allow(clippy::too_many_arguments)]
pub fn verify_seal(
    proof: RegisteredSealProof,
    comm_r: Bytes32,
    comm_d: Bytes32,
    prover_id: Bytes32,
    sector_id: u64,
    ticket: Bytes32,
    seed: Bytes32,
    proof_bytes: &[u8],
) -> Result<bool> {
    seal::verify_seal(
        proof,
        comm_r,
        comm_d,
        prover_id,
        SectorId::from(sector_id),
        ticket,
        seed,
        proof_bytes,
    )
}

/// Unseals `num_bytes` unpadded bytes from `offset` into `out_path`. Returns bytes written.
#[allow(clippy::too_many_arguments)]
pub fn unseal_range(
    proof: RegisteredSealProof,
    cache_dir: &Path,
    sealed_path: &Path,
    out_path: &Path,
    prover_id: Bytes32,
    sector_id: u64,
    comm_d: Bytes32,
    ticket: Bytes32,
    offset: u64,
    num_bytes: u64,
) -> Result<u64> {
    let sealed = File::open(sealed_path)
        .with_context(|| format!("cannot open sealed file {}", sealed_path.display()))?;
    let out = File::create(out_path)
        .with_context(|| format!("cannot create {}", out_path.display()))?;
    let written = seal::unseal_range(
        proof,
        cache_dir,
        sealed,
        out,
        prover_id,
        SectorId::from(sector_id),
        comm_d,
        ticket,
        UnpaddedByteIndex(offset),
        UnpaddedBytesAmount(num_bytes),
    )?;
    Ok(written.0)
}

/// Removes the layers and trees that proving no longer needs (keeps tree-r-last, p_aux, t_aux).
pub fn clear_cache(cache_dir: &Path) -> Result<()> {
    seal::clear_cache(cache_dir)
}

// ---------------------------------------------------------------------------------------------
// Snap (empty sector update)

/// Commitments of an encoded replica.
#[derive(Clone, Copy, Debug)]
pub struct SnapEncoded {
    pub comm_r_new: Bytes32,
    pub comm_r_last_new: Bytes32,
    pub comm_d_new: Bytes32,
}

#[allow(clippy::too_many_arguments)]
pub fn snap_encode(
    proof: RegisteredUpdateProof,
    new_replica_path: &Path,
    new_cache_dir: &Path,
    sector_key_path: &Path,
    sector_key_cache_dir: &Path,
    staged_path: &Path,
    pieces: &[Piece],
) -> Result<SnapEncoded> {
    let out = update::empty_sector_update_encode_into(
        proof,
        new_replica_path,
        new_cache_dir,
        sector_key_path,
        sector_key_cache_dir,
        staged_path,
        &piece_infos(pieces)?,
    )?;
    Ok(SnapEncoded {
        comm_r_new: out.comm_r_new,
        comm_r_last_new: out.comm_r_last_new,
        comm_d_new: out.comm_d_new,
    })
}

/// Vanilla partition proofs of an encoded replica, one serialized proof per partition.
#[allow(clippy::too_many_arguments)]
pub fn snap_partition_proofs(
    proof: RegisteredUpdateProof,
    comm_r_old: Bytes32,
    comm_r_new: Bytes32,
    comm_d_new: Bytes32,
    sector_key_path: &Path,
    sector_key_cache_dir: &Path,
    replica_path: &Path,
    replica_cache_dir: &Path,
) -> Result<Vec<Vec<u8>>> {
    let proofs = update::generate_partition_proofs(
        proof,
        comm_r_old,
        comm_r_new,
        comm_d_new,
        sector_key_path,
        sector_key_cache_dir,
        replica_path,
        replica_cache_dir,
    )?;
    Ok(proofs.into_iter().map(|p| p.0).collect())
}

pub fn snap_verify_partition_proofs(
    proof: RegisteredUpdateProof,
    partition_proofs: Vec<Vec<u8>>,
    comm_r_old: Bytes32,
    comm_r_new: Bytes32,
    comm_d_new: Bytes32,
) -> Result<bool> {
    let proofs: Vec<PartitionProofBytes> =
        partition_proofs.into_iter().map(PartitionProofBytes).collect();
    update::verify_partition_proofs(proof, &proofs, comm_r_old, comm_r_new, comm_d_new)
}

/// The snap SNARK from the vanilla partition proofs.
pub fn snap_prove(
    proof: RegisteredUpdateProof,
    partition_proofs: Vec<Vec<u8>>,
    comm_r_old: Bytes32,
    comm_r_new: Bytes32,
    comm_d_new: Bytes32,
) -> Result<Vec<u8>> {
    let proofs: Vec<PartitionProofBytes> =
        partition_proofs.into_iter().map(PartitionProofBytes).collect();
    let out = update::generate_empty_sector_update_proof_with_vanilla(
        proof, proofs, comm_r_old, comm_r_new, comm_d_new,
    )?;
    Ok(out.0)
}

pub fn snap_verify(
    proof: RegisteredUpdateProof,
    proof_bytes: &[u8],
    comm_r_old: Bytes32,
    comm_r_new: Bytes32,
    comm_d_new: Bytes32,
) -> Result<bool> {
    update::verify_empty_sector_update_proof(proof, proof_bytes, comm_r_old, comm_r_new, comm_d_new)
}
