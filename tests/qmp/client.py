"""Drives `vmm run --qmp unix:PATH` with the reference's own QMP library
(`qemu.qmp`, what QEMU's tooling uses): greeting and negotiation, queries,
stop/cont with their events, an unknown command's error class, quit.
Prints `qmp: ok` at the end; any failure raises (non-zero exit)."""

import asyncio
import sys

from qemu.qmp import EventListener, ExecuteError, QMPClient


async def main(path: str) -> None:
    qmp = QMPClient("vmm-e2e")
    await asyncio.wait_for(qmp.connect(path), 10)
    status = await qmp.execute("query-status")
    assert status["status"] == "running" and status["running"] is True, status
    version = await qmp.execute("query-version")
    assert version["package"].startswith("vmm "), version
    names = [c["name"] for c in await qmp.execute("query-commands")]
    assert "query-status" in names and "quit" in names, names
    assert await qmp.execute("query-name") == {}
    listener = EventListener()
    qmp.register_listener(listener)
    await qmp.execute("stop")
    event = await asyncio.wait_for(listener.get(), 10)
    assert event["event"] == "STOP" and "timestamp" in event, event
    status = await qmp.execute("query-status")
    assert status["status"] == "paused" and status["running"] is False, status
    await qmp.execute("cont")
    event = await asyncio.wait_for(listener.get(), 10)
    assert event["event"] == "RESUME", event
    try:
        await qmp.execute("no-such-command")
        raise AssertionError("an unknown command succeeded")
    except ExecuteError as e:
        assert e.error_class == "CommandNotFound", e
    await qmp.execute("quit")
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # the vmm closes the connection after quit, as QEMU does
    print("qmp: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
