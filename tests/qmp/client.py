"""Drives `vmm run -M pc-5.1 --qmp unix:PATH` with the reference's own QMP
library (`qemu.qmp`, what QEMU's tooling uses): greeting and negotiation,
queries, stop/cont with their events, QOM reads of values that come from
compat deltas, error classes, quit. Prints `qmp: ok` at the end; any failure
raises (non-zero exit)."""

import asyncio
import sys

from qemu.qmp import EventListener, ExecuteError, QMPClient


async def error_class(qmp: QMPClient, cmd: str, args=None) -> str:
    try:
        await qmp.execute(cmd, args)
    except ExecuteError as e:
        return e.error_class
    raise AssertionError(f"{cmd} {args} succeeded")


async def main(path: str) -> None:
    qmp = QMPClient("vmm-e2e")
    await asyncio.wait_for(qmp.connect(path), 10)
    status = await qmp.execute("query-status")
    assert status["status"] == "running" and status["running"] is True, status
    version = await qmp.execute("query-version")
    assert version["package"].startswith("vmm "), version
    names = [c["name"] for c in await qmp.execute("query-commands")]
    for want in ("query-status", "quit", "qom-get", "migrate-incoming", "x-vmm-status"):
        assert want in names, names
    assert await qmp.execute("query-name") == {}

    machines = {m["name"]: m for m in await qmp.execute("query-machines")}
    assert "pc-5.1" in machines and machines["pc-5.1"]["cpu-max"] > 0, machines
    default = [m for m in machines.values() if m.get("is-default")]
    assert len(default) == 1 and default[0]["alias"] == "pc", default
    cpus = await qmp.execute("query-cpus-fast")
    assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
    assert all(c["thread-id"] > 0 and c["target"] == "x86_64" for c in cpus), cpus

    # QOM: the machine's devices, values from pc-5.1's compat deltas.
    children = {c["name"]: c["type"] for c in await qmp.execute("qom-list", {"path": "/machine/peripheral"})}
    assert children.get("pcie-root-port0") == "child<pcie-root-port>", children
    port = "/machine/peripheral/pcie-root-port0"
    props = {p["name"]: p["type"] for p in await qmp.execute("qom-list", {"path": port})}
    assert props["x-pcie-err-unc-mask"] == "bool", props
    # hw_compat_7_2 turns it off on pc-5.1 (on for pc-7.2 and later).
    assert await qmp.execute("qom-get", {"path": port, "property": "x-pcie-err-unc-mask"}) is False
    assert await qmp.execute("qom-get", {"path": port, "property": "type"}) == "pcie-root-port"
    cpu0 = cpus[0]["qom-path"]
    # pc_compat_6_0 on the CPU model.
    assert await qmp.execute("qom-get", {"path": cpu0, "property": "x-vendor-cpuid-only"}) is False
    assert await error_class(qmp, "qom-get", {"path": "/machine/peripheral/nope", "property": "x"}) == "DeviceNotFound"
    assert await error_class(qmp, "qom-get", {"path": port, "property": "no-such"}) == "GenericError"

    defs = {d["name"]: d for d in await qmp.execute("query-cpu-definitions")}
    assert defs["qemu64"]["unavailable-features"] == [] and defs["qemu64"]["migration-safe"], defs
    assert defs["host"]["migration-safe"] is False, defs
    exp = await qmp.execute("query-cpu-model-expansion",
                            {"type": "full", "model": {"name": "qemu64", "props": {"x2apic": True}}})
    assert exp["model"]["props"]["x2apic"] is True and exp["model"]["props"]["pni"] is False, exp

    provenance = await qmp.execute("x-vmm-query-provenance",
                                   {"type": "pcie-root-port", "property": "x-pcie-err-unc-mask"})
    assert provenance[0]["provenance"] == "hw_compat_7_2", provenance

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
    await qmp.execute("system_powerdown")
    event = await asyncio.wait_for(listener.get(), 10)
    assert event["event"] == "POWERDOWN", event

    assert await error_class(qmp, "no-such-command") == "CommandNotFound"
    assert await error_class(qmp, "migrate", {"uri": 5}) == "GenericError"
    assert await error_class(qmp, "stop", {"bogus": 1}) == "GenericError"
    await qmp.execute("quit")
    event = await asyncio.wait_for(listener.get(), 10)
    assert event["event"] == "SHUTDOWN" and event["data"]["guest"] is False, event
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # the vmm closes the connection after quit, as QEMU does
    print("qmp: ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
