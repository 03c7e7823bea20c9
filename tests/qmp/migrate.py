"""Migrates a `vmm run --qmp` guest with the reference's QMP library:
multifd on, 2 channels with zstd set through migrate-set-capabilities /
migrate-set-parameters, `migrate`, then the MIGRATION events up to
`completed`. Usage: migrate.py QMP_SOCKET DESTINATION_URI."""

import asyncio
import sys

from qemu.qmp import EventListener, QMPClient


async def main(path: str, uri: str) -> None:
    qmp = QMPClient("vmm-e2e-migrate")
    await asyncio.wait_for(qmp.connect(path), 10)
    await qmp.execute(
        "migrate-set-capabilities",
        {"capabilities": [{"capability": "multifd", "state": True}]},
    )
    await qmp.execute(
        "migrate-set-parameters",
        {"multifd-channels": 2, "multifd-compression": "zstd", "downtime-limit": 300},
    )
    params = await qmp.execute("query-migrate-parameters")
    assert params["multifd-channels"] == 2 and params["multifd-compression"] == "zstd", params
    caps = {c["capability"]: c["state"] for c in await qmp.execute("query-migrate-capabilities")}
    assert caps["multifd"] is True, caps
    listener = EventListener("MIGRATION")
    qmp.register_listener(listener)
    assert await qmp.execute("migrate", {"uri": uri}) == {}
    seen = []
    while not seen or seen[-1] not in ("completed", "failed", "cancelled"):
        event = await asyncio.wait_for(listener.get(), 120)
        seen.append(event["data"]["status"])
    assert seen[-1] == "completed", seen
    try:
        await qmp.disconnect()
    except EOFError:
        pass  # the source vmm exits once the destination runs
    print("qmp migrate: " + " -> ".join(seen))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
