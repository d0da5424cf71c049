"""The packet-id ledger: ids reserved in shared memory before use, singly or a run at once."""

from __future__ import annotations

import pytest

from xdp_ovpn.dataplane.ledger import PID_BLOCK, Ledger, LedgerSender
from xdp_ovpn.proto.errors import PacketIdExhausted
from xdp_ovpn.proto.pktid import PACKET_ID_MAX


def test_runs_and_single_ids_are_reserved_before_use_and_survive_a_restart() -> None:
    ledger = Ledger(slots=4)
    index = ledger.allocate()
    sender = LedgerSender(ledger.ids, index)
    assert sender.next() == 1
    assert sender.take(44) == 2 and sender.last == 45
    assert ledger.ids[index] >= 45
    sender.take(PID_BLOCK)  # crosses the reservation: the ledger moves ahead first
    assert ledger.ids[index] >= sender.last
    restarted = LedgerSender(ledger.ids, index)  # a new worker starts above the reservation
    assert restarted.next() > sender.last
    ledger.close()


def test_a_run_past_the_id_space_takes_nothing() -> None:
    ledger = Ledger(slots=1)
    sender = LedgerSender(ledger.ids, ledger.allocate())
    sender.last = PACKET_ID_MAX - 2
    with pytest.raises(PacketIdExhausted):
        sender.take(3)
    assert sender.take(2) == PACKET_ID_MAX - 1 and sender.last == PACKET_ID_MAX
    ledger.close()
