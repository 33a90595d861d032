//! Groth16 parameters: generation for test sizes, file naming, the official manifest.
//!
//! `filecoin-proofs-api` never generates parameters (every production path passes `rng = None`),
//! so this uses the sibling crates' public items, as upstream's `paramcache` does. Locally
//! generated parameters are a different trusted setup: proofs verify against the local `.vk`
//! only, which is what a test or development farm needs.

use std::path::PathBuf;

use anyhow::{bail, Result};
use filecoin_proofs::constants::DefaultPieceHasher;
use filecoin_proofs::parameters::public_params;
use filecoin_proofs::{with_shape, MerkleTreeTrait, PoRepConfig, TreeRHasher};
use filecoin_proofs_api::RegisteredSealProof;
use rand::rngs::OsRng;
use storage_proofs_core::compound_proof::CompoundProof;
use storage_proofs_core::parameter_cache::{
    parameter_cache_dir, CacheableParameters, PARAMETERS_DATA,
};
use storage_proofs_porep::stacked::{StackedCircuit, StackedCompound, StackedDrg};
use storage_proofs_update::{
    EmptySectorUpdate, EmptySectorUpdateCircuit, EmptySectorUpdateCompound, PublicParams,
};

/// The two circuits a sealing worker proves: PoRep (C2) and EmptySectorUpdate (snap prove).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Circuit {
    Porep,
    Update,
}

impl Circuit {
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "porep" => Ok(Circuit::Porep),
            "update" => Ok(Circuit::Update),
            _ => bail!("unknown circuit {name:?}: expected \"porep\" or \"update\""),
        }
    }
}

fn porep_config(sector_size: u64) -> Result<PoRepConfig> {
    use RegisteredSealProof::*;
    let proof = match sector_size {
        2048 => StackedDrg2KiBV1_1,
        8_388_608 => StackedDrg8MiBV1_1,
        536_870_912 => StackedDrg512MiBV1_1,
        34_359_738_368 => StackedDrg32GiBV1_1,
        68_719_476_736 => StackedDrg64GiBV1_1,
        _ => bail!("no published proof for a sector of {sector_size} bytes"),
    };
    Ok(proof.as_v1_config())
}

type Porep<Tree> = StackedCompound<Tree, DefaultPieceHasher>;

fn porep_identifier<Tree: 'static + MerkleTreeTrait>(cfg: &PoRepConfig) -> Result<String> {
    let pp = public_params::<Tree>(cfg)?;
    Ok(<Porep<Tree> as CacheableParameters<StackedCircuit<Tree, DefaultPieceHasher>, _>>::cache_identifier(&pp))
}

fn update_identifier<Tree: 'static + MerkleTreeTrait<Hasher = TreeRHasher>>(
    sector_size: u64,
) -> Result<String> {
    let pp = PublicParams::from_sector_size(sector_size);
    Ok(
        <EmptySectorUpdateCompound<Tree> as CacheableParameters<EmptySectorUpdateCircuit<Tree>, _>>::cache_identifier(&pp),
    )
}

fn porep_generate<Tree: 'static + MerkleTreeTrait>(cfg: &PoRepConfig) -> Result<()> {
    let pp = public_params::<Tree>(cfg)?;
    let circuit =
        <Porep<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::blank_circuit(
            &pp,
        );
    <Porep<Tree> as CacheableParameters<StackedCircuit<Tree, DefaultPieceHasher>, _>>::get_param_metadata(circuit, &pp)?;
    <Porep<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::groth_params(
        Some(&mut OsRng),
        &pp,
    )?;
    <Porep<Tree> as CompoundProof<StackedDrg<'_, Tree, DefaultPieceHasher>, _>>::verifying_key(
        Some(&mut OsRng),
        &pp,
    )?;
    Ok(())
}

fn update_generate<Tree: 'static + MerkleTreeTrait<Hasher = TreeRHasher>>(
    sector_size: u64,
) -> Result<()> {
    let pp = PublicParams::from_sector_size(sector_size);
    type C<T> = EmptySectorUpdateCompound<T>;
    let circuit = <C<Tree> as CompoundProof<EmptySectorUpdate<Tree>, _>>::blank_circuit(&pp);
    <C<Tree> as CacheableParameters<EmptySectorUpdateCircuit<Tree>, _>>::get_param_metadata(circuit, &pp)?;
    <C<Tree> as CompoundProof<EmptySectorUpdate<Tree>, _>>::groth_params(Some(&mut OsRng), &pp)?;
    <C<Tree> as CompoundProof<EmptySectorUpdate<Tree>, _>>::verifying_key(Some(&mut OsRng), &pp)?;
    Ok(())
}

/// The parameter-cache identifier of a circuit: files are `v28-{id}.params|.vk|.meta`.
pub fn identifier(circuit: Circuit, sector_size: u64) -> Result<String> {
    let cfg = porep_config(sector_size)?;
    match circuit {
        Circuit::Porep => with_shape!(sector_size, porep_identifier, &cfg),
        Circuit::Update => with_shape!(sector_size, update_identifier, sector_size),
    }
}

/// Generates (or, if present, loads) the `.params`, `.vk` and `.meta` files of a circuit into the
/// library's parameter cache directory (`FIL_PROOFS_PARAMETER_CACHE`).
pub fn generate(circuit: Circuit, sector_size: u64) -> Result<()> {
    let cfg = porep_config(sector_size)?;
    match circuit {
        Circuit::Porep => with_shape!(sector_size, porep_generate, &cfg),
        Circuit::Update => with_shape!(sector_size, update_generate, sector_size),
    }
}

/// The directory the library reads parameters from (settings are read once per process).
pub fn cache_dir() -> PathBuf {
    parameter_cache_dir()
}

/// The official `parameters.json` manifest shipped inside storage-proofs-core.
pub fn manifest_json() -> &'static str {
    PARAMETERS_DATA
}
