"""A storage + memory migration between two `vmm` processes driven only
through QMP with the reference's QMP library, as the reference documents
it: the destination (`--incoming defer`, its own image) starts an NBD
server and exports its drive writable; the source adds the NBD node and
mirrors onto it until BLOCK_JOB_READY; migrate; then block-job-cancel ends
the READY job in step (BLOCK_JOB_COMPLETED) and the destination stops its
server. Usage: storage.py SOURCE_QMP DESTINATION_QMP NBD_SOCKET MIGRATION_SOCKET.
Prints the job and migration events seen."""

import asyncio
import sys

from qemu.qmp import EventListener, QMPClient


async def event(listener: EventListener, name: str, timeout: float = 120):
    while True:
        e = await asyncio.wait_for(listener.get(), timeout)
        if e["event"] == name:
            return e


async def main(src_path: str, dst_path: str, nbd: str, mig: str) -> None:
    src = QMPClient("vmm-e2e-source")
    dst = QMPClient("vmm-e2e-destination")
    await asyncio.wait_for(src.connect(src_path), 10)
    await asyncio.wait_for(dst.connect(dst_path), 10)
    drives = [d["device"] for d in await dst.execute("query-block")]
    assert drives == ["virtio-blk0"], drives
    await dst.execute("nbd-server-start", {"addr": {"type": "unix", "data": {"path": nbd}}})
    await dst.execute(
        "block-export-add",
        {"type": "nbd", "id": "export0", "node-name": "virtio-blk0", "writable": True},
    )
    exports = await dst.execute("query-block-exports")
    assert exports[0]["node-name"] == "virtio-blk0", exports
    jobs = EventListener(("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_ERROR"))
    migration = EventListener("MIGRATION")
    src.register_listener(jobs)
    src.register_listener(migration)
    await src.execute(
        "blockdev-add",
        {"driver": "nbd", "node-name": "target0", "export": "virtio-blk0",
         "server": {"type": "unix", "path": nbd}},
    )
    await src.execute(
        "blockdev-mirror",
        {"job-id": "mirror0", "device": "virtio-blk0", "target": "target0", "sync": "full"},
    )
    ready = await event(jobs, "BLOCK_JOB_READY")
    assert ready["data"]["device"] == "mirror0", ready
    print("BLOCK_JOB_READY", ready["data"]["len"])
    (job,) = await src.execute("query-block-jobs")
    assert job["ready"] is True and job["offset"] == job["len"], job
    await dst.execute("migrate-incoming", {"uri": f"unix:{mig}"})
    await src.execute("migrate", {"uri": f"unix:{mig}"})
    seen = []
    while not seen or seen[-1] not in ("completed", "failed", "cancelled"):
        e = await asyncio.wait_for(migration.get(), 120)
        seen.append(e["data"]["status"])
    print("MIGRATION", " -> ".join(seen))
    assert seen[-1] == "completed", seen
    await src.execute("block-job-cancel", {"device": "mirror0"})
    done = await event(jobs, "BLOCK_JOB_COMPLETED")
    assert "error" not in done["data"], done
    print("BLOCK_JOB_COMPLETED", done["data"]["offset"])
    assert await src.execute("query-block-jobs") == []
    await dst.execute("nbd-server-stop")
    for q in (src, dst):
        try:
            await q.disconnect()
        except EOFError:
            pass
    print("storage: ok")


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
