"""The transition tables are the contract: they must say exactly what the task state flow says."""

import re
from pathlib import Path

import pytest

from damocles_py.config.schema import Plan
from damocles_py.fsm.failure import FailureCause, FailureLevel, describe_all
from damocles_py.fsm.plans import PLANS, InvalidTransition
from damocles_py.fsm.sector import Sector, SnapUpPhase
from damocles_py.fsm.states import Event, State
from damocles_py.manager.interface import Deal, SectorId, Ticket
from damocles_py.proofs import PieceInfo, SealProof, SnapEncodeOutput

SEED = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "003_3bce55c7913f8308.txt"
SECTIONS = {Plan.sealer: "state flow of sealer", Plan.snapup: "snapup", Plan.rebuild: "state flow of rebuild"}


def seed_tables() -> dict[Plan, dict[State, dict[Event, State]]]:
    text = SEED.read_text()
    parts = re.split(r"^# ", text, flags=re.M)
    tables = {}
    for plan, title in SECTIONS.items():
        (body,) = [p for p in parts if p.lower().startswith(("the " + title).lower()) or title in p.lower()[:60]]
        table: dict[State, dict[Event, State]] = {}
        current = None
        for line in body.splitlines():
            if m := re.match(r"State::(\w+) => \{", line):
                current = table.setdefault(State[m.group(1)], {})
            elif (m := re.match(r"Event::(\w+)(?:\(.*\))? => State::(\w+),", line)) and current is not None:
                current[Event[m.group(1)]] = State[m.group(2)]
        tables[plan] = table
    return tables


@pytest.mark.skipif(not SEED.exists(), reason="shared/seeds is not beside the clone")
@pytest.mark.parametrize("plan", list(Plan))
def test_tables_match_the_state_flow(plan):
    expected = seed_tables()[plan]
    actual = {state: step.transitions for state, step in PLANS[plan].steps.items()}
    assert actual == expected


def test_every_state_has_a_handler_or_is_final():
    for spec in PLANS.values():
        for step in spec.steps.values():
            for nxt in step.transitions.values():
                assert nxt in spec.steps or nxt.is_final


def test_unknown_transition_is_refused():
    with pytest.raises(InvalidTransition, match="no transition from PC1Done on C2"):
        PLANS[Plan.sealer].next_state(State.PC1Done, Event.C2)


def test_sector_round_trips_through_json():
    piece = PieceInfo(b"\x01" * 32, 2032)
    sector = Sector(
        uid=3, plan=Plan.rebuild, state=State.SnapEncoded, id=SectorId(1000, 7), proof=SealProof.StackedDrg2KiBV1_1,
        deals=[Deal(1, piece, "/p/1", 2000)], pieces=[piece], ticket=Ticket(b"\x02" * 32, 5),
        pc1_out=b"{}", comm_r=b"\x03" * 32,
        snap=SnapUpPhase(pieces=[piece], encoded=SnapEncodeOutput(b"\x04" * 32, b"\x05" * 32, b"\x06" * 32),
                         vanilla_proofs=[b"ab", b"cd"]),
    )
    assert Sector.from_json(sector.to_json()) == sector


def test_failure_causes_are_documented_with_levels():
    table = describe_all()
    for cause in FailureCause:
        assert f"`{cause.name}`" in table
        assert cause.meaning and cause.action
    assert FailureCause.ManagerUnreachable.level is FailureLevel.temporary
    assert FailureCause.PieceCommitmentMismatch.level is FailureLevel.abort
    assert FailureCause.TicketExpired.level is FailureLevel.permanent
