"""Rank 0's command channel: length-prefixed pickles over the pod's Unix sockets."""

from __future__ import annotations

import threading

import pytest

from fms_worker.parallel.command_channel import CommandChannel


def _pair(followers: int, tag: str):
    server, address = CommandChannel.listen(tag)
    out: list[CommandChannel] = []
    t = threading.Thread(target=lambda: out.append(CommandChannel.accept(server, followers, timeout_s=10)))
    t.start()
    receivers = [CommandChannel.connect(address) for _ in range(followers)]
    t.join(10)
    return out[0], receivers


def test_every_follower_gets_every_command_in_order():
    sender, receivers = _pair(2, "order")
    big = bytes(range(256)) * 40_000  # 10 MB: larger than any socket buffer, read in many pieces
    commands = [("launch", ({"seq": i},)) for i in range(5)] + [("big", (big,)), ("stop", ())]
    got: dict[int, list] = {0: [], 1: []}

    def follow(i):
        while True:
            got[i].append(receivers[i].recv())
            if got[i][-1][0] == "stop":
                return

    threads = [threading.Thread(target=follow, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for c in commands:
        sender.send(c)
    for t in threads:
        t.join(30)
    assert got[0] == commands and got[1] == commands
    sender.close()
    for r in receivers:
        r.close()


def test_rank0_does_not_wait_for_a_busy_follower():
    """Unlike a gloo broadcast, a send returns while the follower has not asked for anything yet: three
    steps are queued before it reads the first."""
    sender, (receiver,) = _pair(1, "ahead")
    for i in range(3):
        sender.send(("launch", (i,)))
    assert [receiver.recv() for _ in range(3)] == [("launch", (i,)) for i in range(3)]
    sender.close()
    receiver.close()


def test_a_follower_learns_that_rank0_is_gone():
    sender, (receiver,) = _pair(1, "gone")
    sender.send(("launch", ()))
    sender.close()
    assert receiver.recv() == ("launch", ())
    with pytest.raises(ConnectionError, match="rank 0 closed the command channel"):
        receiver.recv()
    receiver.close()


def test_accept_gives_up_when_a_follower_never_connects():
    server, _ = CommandChannel.listen("absent")
    with pytest.raises(TimeoutError):
        CommandChannel.accept(server, 1, timeout_s=0.2)


def test_a_connection_from_another_user_is_dropped(monkeypatch):
    """Only processes of rank 0's user become followers (any process of the pod could reach the address)."""
    import os

    from fms_worker.parallel import command_channel

    real_uid = os.getuid()
    uids = iter([real_uid + 1, real_uid])  # the first peer seems to be someone else
    monkeypatch.setattr(command_channel.os, "getuid", lambda: real_uid)
    real_unpack = command_channel._PEER.unpack
    monkeypatch.setattr(command_channel, "_PEER", type("P", (), {
        "size": command_channel._PEER.size,
        "unpack": staticmethod(lambda raw: (real_unpack(raw)[0], next(uids), real_unpack(raw)[2]))})())
    server, address = CommandChannel.listen("stranger")
    out = []
    t = threading.Thread(target=lambda: out.append(CommandChannel.accept(server, 1, timeout_s=10)))
    t.start()
    stranger = CommandChannel.connect(address)
    follower = CommandChannel.connect(address)
    t.join(10)
    (sender,) = out
    sender.send(("launch", ()))
    assert follower.recv() == ("launch", ())
    with pytest.raises(ConnectionError):
        stranger.recv()  # closed without a word
    for c in (sender, stranger, follower):
        c.close()


def test_a_channel_that_cannot_connect_says_how_to_do_without(monkeypatch):
    from fms_worker.parallel import launch

    monkeypatch.setattr(launch.dist, "broadcast_object_list", lambda box, src, group: box.__setitem__(0, "\0nobody"))
    follower = launch.RankInfo(1, 2, 2, 1)
    with pytest.raises(RuntimeError, match="FMS_COMMANDS=gloo in the worker's environment"):
        launch._open_channel(follower, None, True, 0)
