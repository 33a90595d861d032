"""The `Venus.*` wire codec against the reference's JSON (`shared/reference/damocles-rpc.md` §1).

For every method of the reference: what we send is, byte for byte, the request damocles-worker
sends (key names, field order, encodings, positional params, compact serde_json output), and
the answer as the Go manager writes it, with the extra fields Go adds, decodes. Then the ways an
answer can be wrong, each naming the field. damocles-manager is Go and cannot run here: the
peer is its documented wire format, written out literally.
"""

from __future__ import annotations

import base64
import json

import pytest

from damocles_py import proofs
from damocles_py.manager.venus import codec as w
from damocles_py.manager.venus.cid import CidError, CommitmentKind, cid_to_commitment, commitment_to_cid
from damocles_py.manager.venus.codec import WireError
from damocles_py.manager.venus.rpc import encode_request, loads
from damocles_py.proofs import SealProof

# The 2KiB all-zero piece commitment, as Lotus/Boost print it (go-fil-commcid), and as bytes.
ZERO_2K_CID = "baga6ea4seaqpy7usqklokfx2vxuynmupslkeutzexe2uqurdg5vhtebhxqmpqmy"
ZERO_2K = bytes.fromhex("fc7e928296e516faade986b28f92d44a4f24b935485223376a799027bc18f833")
TICKET = bytes(range(32))
TICKET_B64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
COMM_R = bytes(range(100, 132))
COMM_R_JSON = "[" + ",".join(map(str, COMM_R)) + "]"
COMM_D_JSON = "[" + ",".join(map(str, ZERO_2K)) + "]"
PROOF = b"\x01\x02proof bytes\xff"
PROOF_B64 = base64.b64encode(PROOF).decode()
SID = '{"Miner":1000,"Number":1}'
SECTOR = w.SectorID(1000, 1)

# A SectorPiece as Go writes core.SectorPieceV2: DealInfoV2 embeds market.DealInfoV2, whose promoted
# fields come first, then IsBuiltinMarket and IsCompatible.
GO_PIECE = (
    '{"Piece":{"Size":2048,"PieceCID":{"/":"%s"}},'
    '"DealInfo":{"DealID":77,"PublishCid":{"/":"bafy2bzacea3wsdh6y3a36tb3skempjoxqpuyompjbmfeyf34fi3uy6uue42v4"},'
    '"AllocationID":0,"PieceCID":{"/":"%s"},"PieceSize":2048,"Client":"f01234","Provider":"f01000",'
    '"Offset":0,"Length":2048,"PayloadSize":1900,"StartEpoch":100,"EndEpoch":600000,'
    '"IsBuiltinMarket":true,"IsCompatible":true}}' % (ZERO_2K_CID, ZERO_2K_CID))
PIECE = w.SectorPiece(w.PieceInfoV2(2048, ZERO_2K), w.DealInfoV2(77, 0, 1900, True))


def request(method: w.Method, *args, rid: int = 0) -> str:
    return encode_request(method.name, method.encode_params(args), rid).decode()


def answer(method: w.Method, result_json: str):
    return method.decode_result(loads(result_json.encode()))


# ---------------------------------------------------------------------------------------------
# CIDs


def test_piece_cid_is_the_one_lotus_prints_for_the_real_zero_commitment():
    # the real proofs library's commitment of a 2KiB CC sector's single zero piece
    (zero,) = proofs.cc_pieces(SealProof.StackedDrg2KiBV1_1)
    assert zero.commitment == ZERO_2K
    assert commitment_to_cid(ZERO_2K) == ZERO_2K_CID
    assert cid_to_commitment(ZERO_2K_CID) == ZERO_2K
    sealed = commitment_to_cid(COMM_R, CommitmentKind.sealed)
    assert sealed.startswith("bagboea4b5a") and cid_to_commitment(sealed, CommitmentKind.sealed) == COMM_R


@pytest.mark.parametrize("text, why", [
    (commitment_to_cid(COMM_R, CommitmentKind.sealed), "not those of an unsealed"),
    ("bafy2bzacea3wsdh6y3a36tb3skempjoxqpuyompjbmfeyf34fi3uy6uue42v4", "not those of an unsealed"),
    ("QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG", "must start with 'b'"),
    (ZERO_2K_CID.upper(), "must start with 'b'"),
    (ZERO_2K_CID[:-2], "digest"),
    (ZERO_2K_CID + "a", "33-byte digest"),
    (ZERO_2K_CID[:-1] + "z", "not canonical"),  # same bytes, stray bits in the last character
    ("b!!!", "base32"),
])
def test_cids_that_are_not_piece_commitments_are_refused(text, why):
    with pytest.raises(CidError, match=why):
        cid_to_commitment(text)


# ---------------------------------------------------------------------------------------------
# every method: our request is damocles-worker's, Go's answer decodes


def test_1_allocate_sector():
    assert request(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([1000], [5, 10, 15])) == (
        '{"jsonrpc":"2.0","method":"Venus.AllocateSector",'
        '"params":[{"AllowedMiners":[1000],"AllowedProofTypes":[5,10,15]}],"id":0}')
    assert request(w.ALLOCATE_SECTOR, w.AllocateSectorSpec([], [])) == (
        '{"jsonrpc":"2.0","method":"Venus.AllocateSector","params":[{"AllowedMiners":[],"AllowedProofTypes":[]}],"id":0}')
    got = answer(w.ALLOCATE_SECTOR, '{"ID":{"Miner":1000,"Number":1},"ProofType":5}')
    assert got == w.AllocatedSector(SECTOR, 5)
    assert answer(w.ALLOCATE_SECTOR, "null") is None


def test_2_acquire_deals():
    assert request(w.ACQUIRE_DEALS, SECTOR, w.AcquireDealsSpec(None, None)) == (
        '{"jsonrpc":"2.0","method":"Venus.AcquireDeals",'
        '"params":[{"Miner":1000,"Number":1},{"MaxDeals":null,"MinUsedSpace":null}],"id":0}')
    assert request(w.ACQUIRE_DEALS, SECTOR, w.AcquireDealsSpec(4, 1024), rid=7).endswith(
        '{"MaxDeals":4,"MinUsedSpace":1024}],"id":7}')
    ddo = GO_PIECE.replace('"DealID":77', '"DealID":0').replace('"AllocationID":0', '"AllocationID":9') \
                  .replace('"IsBuiltinMarket":true', '"IsBuiltinMarket":false')
    got = answer(w.ACQUIRE_DEALS, f"[{GO_PIECE},{ddo}]")
    assert got == [PIECE, w.SectorPiece(w.PieceInfoV2(2048, ZERO_2K), w.DealInfoV2(0, 9, 1900, False))]
    assert [p.deal_info.ident for p in got] == [77, 9] and not any(p.deal_info.is_pledge for p in got)
    pledge = GO_PIECE.replace('"DealID":77', '"DealID":0')
    assert answer(w.ACQUIRE_DEALS, f"[{pledge}]")[0].deal_info.is_pledge
    assert answer(w.ACQUIRE_DEALS, "null") is None
    with pytest.raises(WireError, match=r"^result\[0\]\.DealInfo: is null"):  # Go's nil *DealInfoV2
        answer(w.ACQUIRE_DEALS, '[{"Piece":{"Size":2048,"PieceCID":{"/":"%s"}},"DealInfo":null}]' % ZERO_2K_CID)


def test_3_assign_ticket():
    assert request(w.ASSIGN_TICKET, SECTOR) == (
        '{"jsonrpc":"2.0","method":"Venus.AssignTicket","params":[{"Miner":1000,"Number":1}],"id":0}')
    assert answer(w.ASSIGN_TICKET, '{"Ticket":"%s","Epoch":12345}' % TICKET_B64) == w.Ticket(TICKET, 12345)
    short = base64.b64encode(TICKET[:31]).decode()
    with pytest.raises(WireError, match=r"^result\.Ticket: expected 32 bytes of randomness, got 31"):
        answer(w.ASSIGN_TICKET, '{"Ticket":"%s","Epoch":12345}' % short)
    with pytest.raises(WireError, match=r"^result\.Ticket: is null"):  # Go's nil abi.Randomness
        answer(w.ASSIGN_TICKET, '{"Ticket":null,"Epoch":12345}')
    with pytest.raises(WireError, match=r"^result: is null"):
        answer(w.ASSIGN_TICKET, "null")


def test_4_submit_pre_commit():
    info = w.PreCommitOnChainInfo(COMM_R, ZERO_2K, w.Ticket(TICKET, 12345))
    assert request(w.SUBMIT_PRE_COMMIT, w.AllocatedSector(SECTOR, 5), info, False) == (
        '{"jsonrpc":"2.0","method":"Venus.SubmitPreCommit","params":[{"ID":{"Miner":1000,"Number":1},"ProofType":5},'
        '{"CommR":%s,"CommD":%s,"Ticket":{"Ticket":"%s","Epoch":12345}},false],"id":0}'
        % (COMM_R_JSON, COMM_D_JSON, TICKET_B64))
    assert answer(w.SUBMIT_PRE_COMMIT, '{"Res":1,"Desc":null}') == w.SubmitResp(w.SubmitResult.Accepted, None)
    assert answer(w.SUBMIT_PRE_COMMIT, '{"Res":4,"Desc":"ticket expired"}').desc == "ticket expired"
    with pytest.raises(WireError, match=r"^result\.Res: 0 is not a SubmitResult"):  # Go's Unknown
        answer(w.SUBMIT_PRE_COMMIT, '{"Res":0,"Desc":null}')


def test_5_poll_pre_commit_state():
    assert request(w.POLL_PRE_COMMIT_STATE, SECTOR) == (
        '{"jsonrpc":"2.0","method":"Venus.PollPreCommitState","params":[{"Miner":1000,"Number":1}],"id":0}')
    for n, state in enumerate(w.OnChainState, start=1):
        assert answer(w.POLL_PRE_COMMIT_STATE, '{"State":%d,"Desc":null}' % n).state is state
    assert answer(w.POLL_PRE_COMMIT_STATE, '{"State":5,"Desc":"exit code 16"}').desc == "exit code 16"
    assert answer(w.POLL_PRE_COMMIT_STATE, '{"State":1}').desc is None  # Option: missing is None
    for bad in ('{"State":0,"Desc":null}', '{"State":8,"Desc":null}', '{"State":"Landed","Desc":null}',
                '{"State":true,"Desc":null}', '{"State":3.0,"Desc":null}'):
        with pytest.raises(WireError, match=r"^result\.State: "):
            answer(w.POLL_PRE_COMMIT_STATE, bad)


def test_6_submit_persisted_ex():
    assert request(w.SUBMIT_PERSISTED_EX, SECTOR, "persist-store-1", False) == (
        '{"jsonrpc":"2.0","method":"Venus.SubmitPersistedEx",'
        '"params":[{"Miner":1000,"Number":1},"persist-store-1",false],"id":0}')
    assert answer(w.SUBMIT_PERSISTED_EX, "true") is True
    assert answer(w.SUBMIT_PERSISTED_EX, "false") is False
    with pytest.raises(WireError, match="^result: expected true or false, got 1"):
        answer(w.SUBMIT_PERSISTED_EX, "1")


def test_7_wait_seed():
    assert request(w.WAIT_SEED, SECTOR, 5) == (
        '{"jsonrpc":"2.0","method":"Venus.WaitSeed","params":[{"Miner":1000,"Number":1},5],"id":0}')
    assert answer(w.WAIT_SEED, '{"ShouldWait":true,"Delay":1500,"Seed":null}') == w.WaitSeedResp(True, 1500, None)
    got = answer(w.WAIT_SEED, '{"ShouldWait":false,"Delay":0,"Seed":{"Seed":"%s","Epoch":2000}}' % TICKET_B64)
    assert got.seed == w.Seed(TICKET, 2000)
    with pytest.raises(WireError, match=r"^result\.Delay: -30 is out of range for u64"):
        answer(w.WAIT_SEED, '{"ShouldWait":true,"Delay":-30,"Seed":null}')


def test_8_submit_proof():
    assert request(w.SUBMIT_PROOF, SECTOR, w.ProofOnChainInfo(PROOF), True) == (
        '{"jsonrpc":"2.0","method":"Venus.SubmitProof",'
        '"params":[{"Miner":1000,"Number":1},{"Proof":"%s"},true],"id":0}' % PROOF_B64)
    assert answer(w.SUBMIT_PROOF, '{"Res":5,"Desc":"files missed"}').res is w.SubmitResult.FilesMissed


def test_9_poll_proof_state():
    assert request(w.POLL_PROOF_STATE, SECTOR) == (
        '{"jsonrpc":"2.0","method":"Venus.PollProofState","params":[{"Miner":1000,"Number":1}],"id":0}')
    assert answer(w.POLL_PROOF_STATE, '{"State":3,"Desc":null}').state is w.OnChainState.Landed


def test_10_report_state():
    req = w.ReportStateReq(w.WorkerIdentifier("192.168.1.10", "/abs/path/store1"),
                           w.SectorStateChange("Allocated", "DealsAcquired", "None"), None)
    assert request(w.REPORT_STATE, SECTOR, req) == (
        '{"jsonrpc":"2.0","method":"Venus.ReportState","params":[{"Miner":1000,"Number":1},'
        '{"Worker":{"Instance":"192.168.1.10","Location":"/abs/path/store1"},'
        '"StateChange":{"Prev":"Allocated","Next":"DealsAcquired","Event":"None"},"Failure":null}],"id":0}')
    failed = w.ReportStateReq(req.worker, req.state_change, w.SectorFailure("Temporary", "boom\nCaused by: é"))
    assert '"Failure":{"Level":"Temporary","Desc":"boom\\nCaused by: é"}' in request(w.REPORT_STATE, SECTOR, failed)
    got = answer(w.REPORT_STATE, '{"Id":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')
    assert got == w.SectorState(SECTOR, False, "")
    got = answer(w.REPORT_STATE, '{"Id":{"Miner":1000,"Number":1},"Finalized":true,"AbortReason":null}')
    assert got.finalized and got.abort_reason is None
    with pytest.raises(WireError, match=r"^result\.Id: missing"):  # case matters: "ID" is not "Id"
        answer(w.REPORT_STATE, '{"ID":{"Miner":1000,"Number":1},"Finalized":false,"AbortReason":""}')


def test_11_report_finalized():
    assert request(w.REPORT_FINALIZED, SECTOR) == (
        '{"jsonrpc":"2.0","method":"Venus.ReportFinalized","params":[{"Miner":1000,"Number":1}],"id":0}')
    assert answer(w.REPORT_FINALIZED, "null") is None
    with pytest.raises(WireError, match="^result: expected null"):
        answer(w.REPORT_FINALIZED, "{}")


def test_12_report_aborted():
    assert request(w.REPORT_ABORTED, SECTOR, "reason text") == (
        '{"jsonrpc":"2.0","method":"Venus.ReportAborted","params":[{"Miner":1000,"Number":1},"reason text"],"id":0}')
    assert answer(w.REPORT_ABORTED, "null") is None


GO_SNAPUP = ('{"Sector":{"ID":{"Miner":1000,"Number":3},"ProofType":5},"Pieces":[%s],'
             '"Public":{"CommR":%s,"SealedCID":{"/":"%s"},"Activation":100,"Expiration":500000},'
             '"Private":{"AccessInstance":"store-a"}}'
             % (GO_PIECE, COMM_R_JSON, commitment_to_cid(COMM_R, CommitmentKind.sealed)))


def test_13_allocate_snapup_sector():
    spec = w.AllocateSnapUpSpec(w.AllocateSectorSpec([1000], [5]), w.AcquireDealsSpec(None, None))
    assert request(w.ALLOCATE_SNAPUP_SECTOR, spec) == (
        '{"jsonrpc":"2.0","method":"Venus.AllocateSanpUpSector","params":[{"Sector":{"AllowedMiners":[1000],'
        '"AllowedProofTypes":[5]},"Deals":{"MaxDeals":null,"MinUsedSpace":null}}],"id":0}')
    got = answer(w.ALLOCATE_SNAPUP_SECTOR, GO_SNAPUP)
    assert got == w.AllocatedSnapUpSector(w.AllocatedSector(w.SectorID(1000, 3), 5), [PIECE],
                                          w.SectorPublicInfo(COMM_R), w.SectorPrivateInfo("store-a"))
    assert answer(w.ALLOCATE_SNAPUP_SECTOR, "null") is None
    with pytest.raises(WireError, match=r"^result\.Pieces: is null"):
        answer(w.ALLOCATE_SNAPUP_SECTOR, GO_SNAPUP.replace('"Pieces":[%s]' % GO_PIECE, '"Pieces":null'))


def test_14_submit_snapup_proof():
    info = w.SnapUpOnChainInfo(COMM_R, ZERO_2K, "store-a", [ZERO_2K], PROOF)
    assert request(w.SUBMIT_SNAPUP_PROOF, SECTOR, info) == (
        '{"jsonrpc":"2.0","method":"Venus.SubmitSnapUpProof","params":[{"Miner":1000,"Number":1},'
        '{"CommR":%s,"CommD":%s,"AccessInstance":"store-a","Pieces":[{"/":"%s"}],"Proof":"%s"}],"id":0}'
        % (COMM_R_JSON, COMM_D_JSON, ZERO_2K_CID, PROOF_B64))
    assert answer(w.SUBMIT_SNAPUP_PROOF, '{"Res":3,"Desc":"mismatch"}').res is w.SubmitResult.MismatchedSubmission


def test_15_worker_ping():
    info = w.WorkerInfo("192.168.1.10", "192.168.1.10:17890", "v0.13.1-git.4235a89",
                        w.WorkerInfoSummary(3, 1, 0, 1, 0, 0))
    assert request(w.WORKER_PING, info) == (
        '{"jsonrpc":"2.0","method":"Venus.WorkerPing","params":[{"Name":"192.168.1.10","Dest":"192.168.1.10:17890",'
        '"Version":"v0.13.1-git.4235a89","Summary":{"Threads":3,"Empty":1,"Paused":0,"Running":1,"Waiting":0,'
        '"Errors":0}}],"id":0}')
    assert answer(w.WORKER_PING, "null") is None


GO_STORE = '{"Name":"store-a","Path":"/mnt/p1","Strict":false,"ReadOnly":false,"Weight":1,"Meta":{}}'


def test_16_store_reserve_space():
    assert request(w.STORE_RESERVE_SPACE, SECTOR, 4096, ["store-a", "store-b"]) == (
        '{"jsonrpc":"2.0","method":"Venus.StoreReserveSpace",'
        '"params":[{"Miner":1000,"Number":1},4096,["store-a","store-b"]],"id":0}')
    assert answer(w.STORE_RESERVE_SPACE, GO_STORE) == w.StoreBasicInfo("store-a", "/mnt/p1", {})
    assert answer(w.STORE_RESERVE_SPACE, "null") is None


def test_17_store_basic_info():
    assert request(w.STORE_BASIC_INFO, "store-a") == (
        '{"jsonrpc":"2.0","method":"Venus.StoreBasicInfo","params":["store-a"],"id":0}')
    got = answer(w.STORE_BASIC_INFO, GO_STORE.replace('"Meta":{}', '"Meta":{"Endpoint":"s3://x"}'))
    assert got.meta == {"Endpoint": "s3://x"}
    assert answer(w.STORE_BASIC_INFO, GO_STORE.replace('"Meta":{}', '"Meta":null')).meta is None
    with pytest.raises(WireError, match=r"^result\.Meta\.Weight: expected a string, got 1"):
        answer(w.STORE_BASIC_INFO, GO_STORE.replace('"Meta":{}', '"Meta":{"Weight":1}'))


def test_18_allocate_rebuild_sector():
    assert request(w.ALLOCATE_REBUILD_SECTOR, w.AllocateSectorSpec([], [5])) == (
        '{"jsonrpc":"2.0","method":"Venus.AllocateRebuildSector",'
        '"params":[{"AllowedMiners":[],"AllowedProofTypes":[5]}],"id":0}')
    legacy = ('{"ID":12,"PayloadSize":1900,"Piece":{"Size":2048,"Cid":{"/":"%s"}},"Proposal":null,'
              '"IsCompatible":true}' % ZERO_2K_CID)  # no Offset: it defaults to 0
    go = ('{"Sector":{"ID":{"Miner":1000,"Number":4},"ProofType":5},"Ticket":{"Ticket":"%s","Epoch":90},'
          '"Pieces":[%s],"PiecesV2":null,"IsSnapUp":false,"UpgradePublic":null}' % (TICKET_B64, legacy))
    got = answer(w.ALLOCATE_REBUILD_SECTOR, go)
    assert got.pieces == [w.DealInfo(id=12, payload_size=1900, piece=w.PieceInfo(size=2048, cid=ZERO_2K))]
    assert got.pieces_v2 is None and not got.is_snapup and got.upgrade_public is None
    upgraded = ('{"Sector":{"ID":{"Miner":1000,"Number":5},"ProofType":5},"Ticket":{"Ticket":"%s","Epoch":90},'
                '"Pieces":null,"PiecesV2":[%s],"IsSnapUp":true,"UpgradePublic":{"CommR":%s,"SealedCID":null,'
                '"Activation":0,"Expiration":0}}' % (TICKET_B64, GO_PIECE, COMM_R_JSON))
    got = answer(w.ALLOCATE_REBUILD_SECTOR, upgraded)
    assert got.pieces_v2 == [PIECE] and got.is_snapup and got.upgrade_public == w.SectorPublicInfo(COMM_R)


def test_19_allocate_unseal_sector():
    go = ('{"Sector":{"ID":{"Miner":1000,"Number":6},"ProofType":5},"PieceCid":{"/":"%s"},"Offset":0,"Size":2032,'
          '"PrivateInfo":{"AccessInstance":"store-a"},"Ticket":{"Ticket":"%s","Epoch":90},"CommD":%s,'
          '"Dest":["file:///tmp/x"],"State":1,"ErrorInfo":""}' % (ZERO_2K_CID, TICKET_B64, COMM_D_JSON))
    got = answer(w.ALLOCATE_UNSEAL_SECTOR, go)
    assert got == w.SectorUnsealInfo(w.AllocatedSector(w.SectorID(1000, 6), 5), ZERO_2K, ZERO_2K,
                                     w.Ticket(TICKET, 90), 0, 2032, w.SectorPrivateInfo("store-a"))


def test_20_achieve_unseal_sector():
    assert request(w.ACHIEVE_UNSEAL_SECTOR, SECTOR, ZERO_2K, "") == (
        '{"jsonrpc":"2.0","method":"Venus.AchieveUnsealSector",'
        '"params":[{"Miner":1000,"Number":1},{"/":"%s"},""],"id":0}' % ZERO_2K_CID)


def test_21_acquire_unseal_dest():
    assert request(w.ACQUIRE_UNSEAL_DEST, SECTOR, ZERO_2K) == (
        '{"jsonrpc":"2.0","method":"Venus.AcquireUnsealDest","params":[{"Miner":1000,"Number":1},{"/":"%s"}],"id":0}'
        % ZERO_2K_CID)
    dests = '["http://h/p","market://store/cid?host=h&scheme=http&token=t","file:///p","store://inst/p"]'
    assert answer(w.ACQUIRE_UNSEAL_DEST, dests) == json.loads(dests)
    with pytest.raises(WireError, match="^result: is null"):  # Go's nil slice
        answer(w.ACQUIRE_UNSEAL_DEST, "null")


def test_22_to_24_wdpost():
    spec = w.AllocatePoStSpec([1000], ["StackedDrgWindow2KiBV1_2"])
    assert request(w.WDPOST_ALLOCATE_JOBS, spec, 1, "192.168.1.10") == (
        '{"jsonrpc":"2.0","method":"Venus.WdPoStAllocateJobs","params":[{"AllowedMiners":[1000],'
        '"AllowedProofTypes":["StackedDrgWindow2KiBV1_2"]},1,"192.168.1.10"],"id":0}')
    go = ('[{"Id":"job-1","State":"allocated","Input":{"Sectors":[{"SectorId":7,"CommR":%s,"Upgrade":false,'
          '"Accesses":{"SealedFile":"store-a","CacheDir":"store-a"}}],"MinerId":1000,'
          '"ProofType":"StackedDrgWindow2KiBV1_2","Seed":%s}}]' % (COMM_R_JSON, COMM_D_JSON))
    (job,) = answer(w.WDPOST_ALLOCATE_JOBS, go)
    assert job.id == "job-1" and job.input.sectors[0].comm_r == COMM_R and job.input.seed == ZERO_2K
    assert answer(w.WDPOST_ALLOCATE_JOBS, "[]") == []
    with pytest.raises(WireError, match="^result: is null"):
        answer(w.WDPOST_ALLOCATE_JOBS, "null")
    assert request(w.WDPOST_HEARTBEAT_JOBS, ["job-1"], "192.168.1.10") == (
        '{"jsonrpc":"2.0","method":"Venus.WdPoStHeartbeatJobs","params":[["job-1"],"192.168.1.10"],"id":0}')
    assert request(w.WDPOST_FINISH_JOB, "job-1", w.WindowPoStOutput([PROOF], [3]), "") == (
        '{"jsonrpc":"2.0","method":"Venus.WdPoStFinishJob",'
        '"params":["job-1",{"proofs":["%s"],"faults":[3]},""],"id":0}' % PROOF_B64)
    assert request(w.WDPOST_FINISH_JOB, "job-1", None, "no sectors") == (
        '{"jsonrpc":"2.0","method":"Venus.WdPoStFinishJob","params":["job-1",null,"no sectors"],"id":0}')


def test_every_method_of_the_reference_is_in_the_table():
    assert len(w.METHODS) == 24 and "Venus.AllocateSanpUpSector" in w.METHODS


# ---------------------------------------------------------------------------------------------
# values of the wrong shape name their field


@pytest.mark.parametrize("result_json, path, problem", [
    ('{"ID":{"Miner":"1000","Number":1},"ProofType":5}', "result.ID.Miner", "expected an integer"),
    ('{"ID":{"Miner":-1,"Number":1},"ProofType":5}', "result.ID.Miner", "out of range for u64"),
    ('{"ID":{"Miner":18446744073709551616,"Number":1},"ProofType":5}', "result.ID.Miner", "out of range"),
    ('{"ID":{"Miner":1000},"ProofType":5}', "result.ID.Number", "missing"),
    ('{"id":{"Miner":1000,"Number":1},"ProofType":5}', "result.ID", "missing"),
    ('{"ID":[1000,1],"ProofType":5}', "result.ID", "expected an object"),
    ('{"ID":{"Miner":1000,"Number":1},"ProofType":true}', "result.ProofType", "expected an integer"),
])
def test_a_field_of_the_wrong_type_names_its_path(result_json, path, problem):
    with pytest.raises(WireError) as e:
        answer(w.ALLOCATE_SECTOR, result_json)
    assert e.value.path == path and problem in e.value.problem


@pytest.mark.parametrize("comm, problem", [
    ("[1,2,3]", "array of 32 integers"),
    ('"%s"' % base64.b64encode(COMM_R).decode(), "array of 32 integers"),  # Go base64-encodes slices, not arrays
    ("[" + ",".join(["256"] * 32) + "]", "0 to 255"),
])
def test_commitments_are_arrays_of_32_bytes(comm, problem):
    with pytest.raises(WireError, match=problem):
        answer(w.ALLOCATE_SNAPUP_SECTOR, GO_SNAPUP.replace(COMM_R_JSON, comm, 1))


def test_randomness_is_strict_standard_base64():
    urlsafe = base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode()  # '-' and '_' are not standard base64
    for bad in (urlsafe, TICKET_B64.rstrip("="), "not base64!"):
        with pytest.raises(WireError, match=r"^result\.Ticket: .* not standard base64"):
            answer(w.ASSIGN_TICKET, '{"Ticket":"%s","Epoch":1}' % bad)


def test_encoding_refuses_values_that_do_not_fit():
    with pytest.raises(ValueError, match="32 bytes"):
        request(w.SUBMIT_PRE_COMMIT, w.AllocatedSector(SECTOR, 5),
                w.PreCommitOnChainInfo(COMM_R[:31], ZERO_2K, w.Ticket(TICKET, 1)), False)
    with pytest.raises(ValueError, match="does not fit u64"):
        request(w.ASSIGN_TICKET, w.SectorID(-1, 1))
    with pytest.raises(TypeError, match="takes 1 params, got 2"):
        request(w.ASSIGN_TICKET, SECTOR, SECTOR)
    with pytest.raises(TypeError, match="param 0: expected .*SectorID.*, got AllocatedSector"):
        request(w.ASSIGN_TICKET, w.AllocatedSector(SECTOR, 5))
    with pytest.raises(TypeError, match="param 2: expected <class 'bool'>, got int"):
        request(w.SUBMIT_PROOF, SECTOR, w.ProofOnChainInfo(PROOF), 0)
