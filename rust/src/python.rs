//! The PyO3 boundary: converts types, releases the GIL, maps errors and panics to `ProofsError`.
//!
//! Nothing here decides anything; `damocles_py.proofs` wraps these functions with typed, validated
//! Python APIs. Every proofs call runs inside `call`, so no Rust panic crosses into Python.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use pyo3::create_exception;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

use crate::params::{self, Circuit};
use crate::stages::{self, Bytes32, Piece};

create_exception!(_core, ProofsError, PyRuntimeError, "A filecoin-proofs call failed.");

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// Runs a proofs call with the GIL released; errors and panics become `ProofsError("{what}: …")`.
fn call<T, F>(py: Python<'_>, what: &str, f: F) -> PyResult<T>
where
    T: Send,
    F: FnOnce() -> anyhow::Result<T> + Send,
{
    match py.allow_threads(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(ProofsError::new_err(format!("{what}: {err:#}"))),
        Err(payload) => Err(ProofsError::new_err(format!(
            "{what}: the proofs library panicked: {}",
            panic_message(payload.as_ref())
        ))),
    }
}

fn b32(name: &str, bytes: &[u8]) -> PyResult<Bytes32> {
    bytes.try_into().map_err(|_| {
        pyo3::exceptions::PyValueError::new_err(format!(
            "{name} must be 32 bytes, got {}",
            bytes.len()
        ))
    })
}

fn to_pieces(pieces: Vec<(Vec<u8>, u64)>) -> PyResult<Vec<Piece>> {
    pieces
        .into_iter()
        .map(|(comm, size)| Ok(Piece { commitment: b32("piece commitment", &comm)?, size }))
        .collect()
}

fn bytes<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyBytes> {
    PyBytes::new(py, data)
}

fn seal_proof(name: &str) -> PyResult<filecoin_proofs_api::RegisteredSealProof> {
    stages::seal_proof(name).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

fn update_proof(name: &str) -> PyResult<filecoin_proofs_api::RegisteredUpdateProof> {
    stages::update_proof(name).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// Pieces and TreeD

#[pyfunction]
fn piece_commitment<'py>(
    py: Python<'py>,
    proof: &str,
    path: PathBuf,
    piece_size: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = seal_proof(proof)?;
    let comm = call(py, "piece commitment", || stages::piece_commitment(proof, &path, piece_size))?;
    Ok(bytes(py, &comm))
}

#[pyfunction]
fn add_piece<'py>(
    py: Python<'py>,
    proof: &str,
    piece_path: PathBuf,
    staged_path: PathBuf,
    piece_size: u64,
    existing: Vec<u64>,
) -> PyResult<(Bound<'py, PyBytes>, u64)> {
    let proof = seal_proof(proof)?;
    let (comm, written) = call(py, "add piece", || {
        stages::add_piece(proof, &piece_path, &staged_path, piece_size, &existing)
    })?;
    Ok((bytes(py, &comm), written))
}

#[pyfunction]
fn compute_comm_d<'py>(
    py: Python<'py>,
    proof: &str,
    pieces: Vec<(Vec<u8>, u64)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = seal_proof(proof)?;
    let pieces = to_pieces(pieces)?;
    let comm = call(py, "compute comm_d", || stages::compute_comm_d(proof, &pieces))?;
    Ok(bytes(py, &comm))
}

#[pyfunction]
fn zero_piece_commitment(py: Python<'_>, size: u64) -> PyResult<Bound<'_, PyBytes>> {
    let comm = call(py, "zero piece commitment", || stages::zero_piece_commitment(size))?;
    Ok(bytes(py, &comm))
}

#[pyfunction]
#[pyo3(signature = (proof, staged_path, cache_dir))]
fn build_tree_d<'py>(
    py: Python<'py>,
    proof: &str,
    staged_path: Option<PathBuf>,
    cache_dir: PathBuf,
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = seal_proof(proof)?;
    let comm = call(py, "TreeD", || {
        stages::build_tree_d(proof, staged_path.as_deref(), &cache_dir)
    })?;
    Ok(bytes(py, &comm))
}

// ---------------------------------------------------------------------------------------------
// Sealing

#[pyfunction]
#[pyo3(signature = (proof, cache_dir, in_path, sealed_path, prover_id, sector_id, ticket, pieces))]
#[allow(clippy::too_many_arguments)]
fn pc1<'py>(
    py: Python<'py>,
    proof: &str,
    cache_dir: PathBuf,
    in_path: Option<PathBuf>,
    sealed_path: PathBuf,
    prover_id: &[u8],
    sector_id: u64,
    ticket: &[u8],
    pieces: Vec<(Vec<u8>, u64)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = seal_proof(proof)?;
    let (prover_id, ticket) = (b32("prover_id", prover_id)?, b32("ticket", ticket)?);
    let pieces = to_pieces(pieces)?;
    let out = call(py, "PC1", || {
        stages::pc1(
            proof,
            &cache_dir,
            in_path.as_deref(),
            &sealed_path,
            prover_id,
            sector_id,
            ticket,
            &pieces,
        )
    })?;
    Ok(bytes(py, &out))
}

#[pyfunction]
fn pc2<'py>(
    py: Python<'py>,
    pc1_output: &[u8],
    cache_dir: PathBuf,
    sealed_path: PathBuf,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let (comm_r, comm_d) = call(py, "PC2", || stages::pc2(pc1_output, &cache_dir, &sealed_path))?;
    Ok((bytes(py, &comm_r), bytes(py, &comm_d)))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn c1<'py>(
    py: Python<'py>,
    proof: &str,
    cache_dir: PathBuf,
    sealed_path: PathBuf,
    prover_id: &[u8],
    sector_id: u64,
    ticket: &[u8],
    seed: &[u8],
    comm_r: &[u8],
    comm_d: &[u8],
    pieces: Vec<(Vec<u8>, u64)>,
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = seal_proof(proof)?;
    let prover_id = b32("prover_id", prover_id)?;
    let (ticket, seed) = (b32("ticket", ticket)?, b32("seed", seed)?);
    let (comm_r, comm_d) = (b32("comm_r", comm_r)?, b32("comm_d", comm_d)?);
    let pieces = to_pieces(pieces)?;
    let out = call(py, "C1", || {
        stages::c1(
            proof, &cache_dir, &sealed_path, prover_id, sector_id, ticket, seed, comm_r, comm_d,
            &pieces,
        )
    })?;
    Ok(bytes(py, &out))
}

#[pyfunction]
fn c2<'py>(
    py: Python<'py>,
    c1_output: &[u8],
    prover_id: &[u8],
    sector_id: u64,
) -> PyResult<Bound<'py, PyBytes>> {
    let prover_id = b32("prover_id", prover_id)?;
    let proof = call(py, "C2", || stages::c2(c1_output, prover_id, sector_id))?;
    Ok(bytes(py, &proof))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn verify_seal(
    py: Python<'_>,
    proof: &str,
    comm_r: &[u8],
    comm_d: &[u8],
    prover_id: &[u8],
    sector_id: u64,
    ticket: &[u8],
    seed: &[u8],
    proof_bytes: &[u8],
) -> PyResult<bool> {
    let proof = seal_proof(proof)?;
    let (comm_r, comm_d) = (b32("comm_r", comm_r)?, b32("comm_d", comm_d)?);
    let prover_id = b32("prover_id", prover_id)?;
    let (ticket, seed) = (b32("ticket", ticket)?, b32("seed", seed)?);
    call(py, "verify seal", || {
        stages::verify_seal(proof, comm_r, comm_d, prover_id, sector_id, ticket, seed, proof_bytes)
    })
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn unseal_range(
    py: Python<'_>,
    proof: &str,
    cache_dir: PathBuf,
    sealed_path: PathBuf,
    out_path: PathBuf,
    prover_id: &[u8],
    sector_id: u64,
    comm_d: &[u8],
    ticket: &[u8],
    offset: u64,
    num_bytes: u64,
) -> PyResult<u64> {
    let proof = seal_proof(proof)?;
    let prover_id = b32("prover_id", prover_id)?;
    let (comm_d, ticket) = (b32("comm_d", comm_d)?, b32("ticket", ticket)?);
    call(py, "unseal", || {
        stages::unseal_range(
            proof, &cache_dir, &sealed_path, &out_path, prover_id, sector_id, comm_d, ticket,
            offset, num_bytes,
        )
    })
}

#[pyfunction]
fn clear_cache(py: Python<'_>, cache_dir: PathBuf) -> PyResult<()> {
    call(py, "clear cache", || stages::clear_cache(&cache_dir))
}

// ---------------------------------------------------------------------------------------------
// Snap

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn snap_encode<'py>(
    py: Python<'py>,
    proof: &str,
    new_replica_path: PathBuf,
    new_cache_dir: PathBuf,
    sector_key_path: PathBuf,
    sector_key_cache_dir: PathBuf,
    staged_path: PathBuf,
    pieces: Vec<(Vec<u8>, u64)>,
) -> PyResult<(Bound<'py, PyBytes>, Bound<'py, PyBytes>, Bound<'py, PyBytes>)> {
    let proof = update_proof(proof)?;
    let pieces = to_pieces(pieces)?;
    let out = call(py, "snap encode", || {
        stages::snap_encode(
            proof,
            &new_replica_path,
            &new_cache_dir,
            &sector_key_path,
            &sector_key_cache_dir,
            &staged_path,
            &pieces,
        )
    })?;
    Ok((bytes(py, &out.comm_r_new), bytes(py, &out.comm_r_last_new), bytes(py, &out.comm_d_new)))
}

#[pyfunction]
#[allow(clippy::too_many_arguments)]
fn snap_partition_proofs<'py>(
    py: Python<'py>,
    proof: &str,
    comm_r_old: &[u8],
    comm_r_new: &[u8],
    comm_d_new: &[u8],
    sector_key_path: PathBuf,
    sector_key_cache_dir: PathBuf,
    replica_path: PathBuf,
    replica_cache_dir: PathBuf,
) -> PyResult<Vec<Bound<'py, PyBytes>>> {
    let proof = update_proof(proof)?;
    let (old, new) = (b32("comm_r_old", comm_r_old)?, b32("comm_r_new", comm_r_new)?);
    let comm_d_new = b32("comm_d_new", comm_d_new)?;
    let proofs = call(py, "snap partition proofs", || {
        stages::snap_partition_proofs(
            proof,
            old,
            new,
            comm_d_new,
            &sector_key_path,
            &sector_key_cache_dir,
            &replica_path,
            &replica_cache_dir,
        )
    })?;
    Ok(proofs.iter().map(|p| bytes(py, p)).collect())
}

#[pyfunction]
fn snap_verify_partition_proofs(
    py: Python<'_>,
    proof: &str,
    partition_proofs: Vec<Vec<u8>>,
    comm_r_old: &[u8],
    comm_r_new: &[u8],
    comm_d_new: &[u8],
) -> PyResult<bool> {
    let proof = update_proof(proof)?;
    let (old, new) = (b32("comm_r_old", comm_r_old)?, b32("comm_r_new", comm_r_new)?);
    let comm_d_new = b32("comm_d_new", comm_d_new)?;
    call(py, "verify snap partition proofs", || {
        stages::snap_verify_partition_proofs(proof, partition_proofs, old, new, comm_d_new)
    })
}

#[pyfunction]
fn snap_prove<'py>(
    py: Python<'py>,
    proof: &str,
    partition_proofs: Vec<Vec<u8>>,
    comm_r_old: &[u8],
    comm_r_new: &[u8],
    comm_d_new: &[u8],
) -> PyResult<Bound<'py, PyBytes>> {
    let proof = update_proof(proof)?;
    let (old, new) = (b32("comm_r_old", comm_r_old)?, b32("comm_r_new", comm_r_new)?);
    let comm_d_new = b32("comm_d_new", comm_d_new)?;
    let out = call(py, "snap prove", || {
        stages::snap_prove(proof, partition_proofs, old, new, comm_d_new)
    })?;
    Ok(bytes(py, &out))
}

#[pyfunction]
fn snap_verify(
    py: Python<'_>,
    proof: &str,
    proof_bytes: &[u8],
    comm_r_old: &[u8],
    comm_r_new: &[u8],
    comm_d_new: &[u8],
) -> PyResult<bool> {
    let proof = update_proof(proof)?;
    let (old, new) = (b32("comm_r_old", comm_r_old)?, b32("comm_r_new", comm_r_new)?);
    let comm_d_new = b32("comm_d_new", comm_d_new)?;
    call(py, "verify snap proof", || {
        stages::snap_verify(proof, proof_bytes, old, new, comm_d_new)
    })
}

// ---------------------------------------------------------------------------------------------
// Parameters

fn circuit(name: &str) -> PyResult<Circuit> {
    Circuit::parse(name).map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
}

#[pyfunction]
fn param_identifier(py: Python<'_>, circuit_name: &str, sector_size: u64) -> PyResult<String> {
    let c = circuit(circuit_name)?;
    call(py, "parameter identifier", || params::identifier(c, sector_size))
}

#[pyfunction]
fn generate_params(py: Python<'_>, circuit_name: &str, sector_size: u64) -> PyResult<()> {
    let c = circuit(circuit_name)?;
    call(py, "generate parameters", || params::generate(c, sector_size))
}

#[pyfunction]
fn param_cache_dir() -> PathBuf {
    params::cache_dir()
}

#[pyfunction]
fn params_manifest() -> &'static str {
    params::manifest_json()
}

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Route the `log` crate (filecoin-proofs, bellperson, ...) into Python's `logging`.
    pyo3_log::init();
    // Panics are turned into ProofsError by `call`; log them instead of printing to stderr.
    std::panic::set_hook(Box::new(|info| log::error!("proofs library panic: {info}")));

    m.add("ProofsError", m.py().get_type::<ProofsError>())?;
    m.add_function(wrap_pyfunction!(piece_commitment, m)?)?;
    m.add_function(wrap_pyfunction!(add_piece, m)?)?;
    m.add_function(wrap_pyfunction!(compute_comm_d, m)?)?;
    m.add_function(wrap_pyfunction!(zero_piece_commitment, m)?)?;
    m.add_function(wrap_pyfunction!(build_tree_d, m)?)?;
    m.add_function(wrap_pyfunction!(pc1, m)?)?;
    m.add_function(wrap_pyfunction!(pc2, m)?)?;
    m.add_function(wrap_pyfunction!(c1, m)?)?;
    m.add_function(wrap_pyfunction!(c2, m)?)?;
    m.add_function(wrap_pyfunction!(verify_seal, m)?)?;
    m.add_function(wrap_pyfunction!(unseal_range, m)?)?;
    m.add_function(wrap_pyfunction!(clear_cache, m)?)?;
    m.add_function(wrap_pyfunction!(snap_encode, m)?)?;
    m.add_function(wrap_pyfunction!(snap_partition_proofs, m)?)?;
    m.add_function(wrap_pyfunction!(snap_verify_partition_proofs, m)?)?;
    m.add_function(wrap_pyfunction!(snap_prove, m)?)?;
    m.add_function(wrap_pyfunction!(snap_verify, m)?)?;
    m.add_function(wrap_pyfunction!(param_identifier, m)?)?;
    m.add_function(wrap_pyfunction!(generate_params, m)?)?;
    m.add_function(wrap_pyfunction!(param_cache_dir, m)?)?;
    m.add_function(wrap_pyfunction!(params_manifest, m)?)?;
    Ok(())
}
