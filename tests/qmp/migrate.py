"""A live migration between two `vmm` processes driven only through QMP,
with the reference's QMP library: the destination was started with
`--incoming defer`; multifd with 2 channels and zstd set on the source;
`migrate-incoming` on the destination, `migrate` on the source, the
source's MIGRATION events up to `completed`, the destination's RESUME.
Usage: migrate.py SOURCE_QMP DESTINATION_QMP. Prints the statuses seen."""

import asyncio
import sys

from qemu.qmp import EventListener, QMPClient


async def main(src_path: str, dst_path: str) -> None:
    src = QMPClient("vmm-e2e-source")
    dst = QMPClient("vmm-e2e-destination")
    await asyncio.wait_for(src.connect(src_path), 10)
    await asyncio.wait_for(dst.connect(dst_path), 10)
    status = await dst.execute("query-status")
    assert status["status"] == "inmigrate", status
    resumed = EventListener("RESUME")
    dst.register_listener(resumed)
    await dst.execute("migrate-incoming", {"uri": "tcp:127.0.0.1:0"})
    # The destination answers once it listens; query-migrate says where
    # (the reference's `socket-address`, the real port of a `:0` request).
    info = await dst.execute("query-migrate")
    assert info["status"] == "setup", info
    addr = info["socket-address"][0]
    assert addr["type"] == "inet", addr
    uri = f"tcp:{addr['host']}:{addr['port']}"
    await src.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "multifd", "state": True}]},
    )
    await src.execute(
        "migrate-set-parameters",
        {"multifd-channels": 2, "multifd-compression": "zstd", "downtime-limit": 300},
    )
    params = await src.execute("query-migrate-parameters")
    assert params["multifd-channels"] == 2 and params["multifd-compression"] == "zstd", params
    caps = {c["capability"]: c["state"] for c in await src.execute("query-migrate-capabilities")}
    assert caps["multifd"] is True, caps
    listener = EventListener("MIGRATION")
    src.register_listener(listener)
    assert await src.execute("migrate", {"uri": uri}) == {}
    seen = []
    while not seen or seen[-1] not in ("completed", "failed", "cancelled"):
        event = await asyncio.wait_for(listener.get(), 120)
        seen.append(event["data"]["status"])
    info = await src.execute("query-migrate")
    assert info["status"] == "completed" and info["ram"]["transferred"] > 0, info
    assert info["downtime"] >= 0 and info["total-time"] > 0, info
    await asyncio.wait_for(resumed.get(), 30)
    status = await dst.execute("query-status")
    assert status["status"] == "running", status
    assert (await dst.execute("query-migrate"))["status"] == "completed"
    for q in (src, dst):
        try:
            await q.disconnect()
        except EOFError:
            pass  # the source vmm exits once the destination runs
    print("qmp migrate: " + " -> ".join(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
