//! Pure-Rust stage harness for `benches/bench_stages.py`: seals one sector by calling the same
//! `stages::*` functions the Python extension calls, and prints per-stage wall times as JSON.
//!
//! usage: stage-bench <sector-size-bytes> <piece-file> <work-dir> [rounds]
//! Seals `rounds` sectors one after the other in this process (as the Python side does in its
//! process) and prints one JSON line per round. The Groth parameters must already be in
//! FIL_PROOFS_PARAMETER_CACHE.

use std::fs;
use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use _core::stages::{self, Piece};

fn proof_name(sector_size: u64) -> Result<&'static str> {
    Ok(match sector_size {
        2048 => "StackedDrg2KiBV1_1",
        8_388_608 => "StackedDrg8MiBV1_1",
        536_870_912 => "StackedDrg512MiBV1_1",
        _ => anyhow::bail!("stage-bench supports 2KiB, 8MiB and 512MiB sectors"),
    })
}

fn timed<T>(times: &mut Vec<(&'static str, f64)>, name: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let start = Instant::now();
    let out = f().with_context(|| format!("stage {name}"))?;
    times.push((name, start.elapsed().as_secs_f64()));
    Ok(out)
}

/// C1 and verify take milliseconds: both harnesses time them as the best of this many calls.
const CHEAP_STAGE_REPEATS: usize = 10;

fn timed_best<T>(
    times: &mut Vec<(&'static str, f64)>,
    name: &'static str,
    mut f: impl FnMut() -> Result<T>,
) -> Result<T> {
    let mut best = f64::INFINITY;
    let mut out = None;
    for _ in 0..CHEAP_STAGE_REPEATS {
        let start = Instant::now();
        out = Some(f().with_context(|| format!("stage {name}"))?);
        best = best.min(start.elapsed().as_secs_f64());
    }
    times.push((name, best));
    Ok(out.expect("at least one repeat"))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    ensure!(
        args.len() == 4 || args.len() == 5,
        "usage: stage-bench <sector-size-bytes> <piece-file> <work-dir> [rounds]"
    );
    let sector_size: u64 = args[1].parse().context("sector size must be a number of bytes")?;
    let rounds: usize = args.get(4).map_or(Ok(1), |r| r.parse()).context("rounds must be a number")?;
    for _ in 0..rounds {
        seal_once(sector_size, Path::new(&args[2]), Path::new(&args[3]))?;
    }
    Ok(())
}

fn seal_once(sector_size: u64, piece_path: &Path, work: &Path) -> Result<()> {
    let proof = stages::seal_proof(proof_name(sector_size)?)?;
    let unpadded = sector_size / 128 * 127;

    let (staged, sealed, cache) = (work.join("staged"), work.join("sealed"), work.join("cache"));
    let _ = fs::remove_dir_all(work);
    fs::create_dir_all(&cache)?;
    fs::write(&staged, b"")?;
    fs::write(&sealed, b"")?;

    let prover_id = [7u8; 32];
    let sector_id = 1u64;
    let ticket = [1u8; 32];
    let seed = [2u8; 32];
    let mut t = Vec::new();

    let (comm_p, _) = timed(&mut t, "add_piece", || {
        stages::add_piece(proof, piece_path, &staged, unpadded, &[])
    })?;
    let pieces = [Piece { commitment: comm_p, size: unpadded }];
    timed(&mut t, "tree_d", || stages::build_tree_d(proof, Some(&staged), &cache))?;
    let pc1 = timed(&mut t, "pc1", || {
        stages::pc1(proof, &cache, Some(&staged), &sealed, prover_id, sector_id, ticket, &pieces)
    })?;
    let (comm_r, comm_d) = timed(&mut t, "pc2", || stages::pc2(&pc1, &cache, &sealed))?;
    let c1 = timed_best(&mut t, "c1", || {
        stages::c1(proof, &cache, &sealed, prover_id, sector_id, ticket, seed, comm_r, comm_d, &pieces)
    })?;
    let snark = timed(&mut t, "c2", || stages::c2(&c1, prover_id, sector_id))?;
    let ok = timed_best(&mut t, "verify", || {
        stages::verify_seal(proof, comm_r, comm_d, prover_id, sector_id, ticket, seed, &snark)
    })?;
    ensure!(ok, "the proof did not verify");

    let stages_json: serde_json::Map<String, serde_json::Value> =
        t.into_iter().map(|(k, v)| (k.to_owned(), serde_json::json!(v))).collect();
    println!("{}", serde_json::json!({"sector_size": sector_size, "stages": stages_json, "verified": ok}));
    Ok(())
}
