"""A pull request's training step that tries to leave its sandbox (scripts/container-test).

Run after train.py, it adds three counts to metrics.json: network endpoints it
reached (the database service, an outside address, DNS), server secrets it could
read (compose secrets, the pgpass file, the container's PID 1 environment) and server variables
it saw. In the sandbox all three must be 0. `--report` prints the same counts as
JSON without touching metrics.json: run in the container itself, outside the
sandbox, it must find them reachable, or the scenario could not fail.
"""

import json
import os
import socket
import sys

ENDPOINTS = [("db", 5432), ("1.1.1.1", 443)]
SECRETS = [
    "/run/secrets/webhook_secret",
    "/run/secrets/app_key",
    "/run/secrets/db_password",
    "/run/modelci/pgpass",
]
# The sandbox's own variables (its seed) are not the server's.
OWN = {"MODELCI_SEED"}


def probe() -> dict[str, int]:
    reached = 0
    for host, port in ENDPOINTS:
        try:
            socket.create_connection((host, port), timeout=3).close()
            reached += 1
            print(f"probe: reached {host}:{port}")
        except OSError as exc:
            print(f"probe: {host}:{port} unreachable ({exc})")
    try:
        socket.getaddrinfo("pypi.org", 443)
        reached += 1
        print("probe: resolved pypi.org")
    except OSError as exc:
        print(f"probe: no DNS ({exc})")
    read = 0
    for path in SECRETS:
        try:
            with open(path, "rb") as f:
                f.read(1)
            read += 1
            print(f"probe: read {path}")
        except OSError as exc:
            print(f"probe: cannot read {path} ({exc.strerror})")
    # PID 1 of the container (tini) holds the server's environment; the sandbox's
    # PID 1 is its own shell, with the sandbox's.
    try:
        with open("/proc/1/environ", "rb") as f:
            if b"MODELCI_DATABASE_URL=" in f.read():
                read += 1
                print("probe: read the server's environment in /proc/1/environ")
    except OSError as exc:
        print(f"probe: cannot read /proc/1/environ ({exc.strerror})")
    prefixes = ("MODELCI_", "PG", "POSTGRES")
    leaked = [k for k in os.environ if k.startswith(prefixes) and k not in OWN]
    print(f"probe: server variables seen: {leaked}")
    return {"network_reached": reached, "secrets_read": read, "env_leaked": len(leaked)}


if __name__ == "__main__":
    counts = probe()
    if "--report" in sys.argv:
        print(json.dumps(counts))
    else:
        with open("metrics.json") as f:
            metrics = json.load(f)
        metrics.update(counts)
        with open("metrics.json", "w") as f:
            json.dump(metrics, f)
