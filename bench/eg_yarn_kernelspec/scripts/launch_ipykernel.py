"""A minimal kernel launcher for Enterprise Gateway's YARN cluster mode (bench/yarn.py only).

Written for the benchmark from what EG 3.3.0's server side expects (see
``enterprise_gateway/services/processproxies/processproxy.py``: ``ResponseManager``
decodes a "version 1" payload, ``RemoteProcessProxy`` uses ``comm_port``, ``pid``
and ``pgid``). It runs as the Spark driver's Python inside YARN's application
master container and:

1. picks free ports for the kernel's five channels and its own comm port;
2. sends them to the gateway's response address, as
   base64(JSON {"version": 1, "key": base64(RSA-PKCS1v1.5(aes key)),
   "conn_info": base64(AES-ECB(PKCS7(JSON connection info)))});
3. prints when it sent them (for the benchmark's timeline; Spark's PythonRunner puts
   it in the driver container's stdout);
4. answers the gateway on the comm port: {"signum": N} signals the kernel (this
   process), {"shutdown": 1} ends it;
5. runs an IPython kernel in this process, with ``spark`` and ``sc`` created in a
   background thread (``lazy``), before the kernel starts (``eager``) or not at all.

Not a replacement for EG's own launcher: no port ranges, no user-defined
namespace, no Spark-specific error reporting.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import sys
import tempfile
import threading
import time
import uuid

from Cryptodome.Cipher import AES, PKCS1_v1_5
from Cryptodome.PublicKey import RSA
from Cryptodome.Random import get_random_bytes
from Cryptodome.Util.Padding import pad

CHANNELS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--RemoteProcessProxy.kernel-id", dest="kernel_id", required=True)
    parser.add_argument("--RemoteProcessProxy.response-address", dest="response_address",
                        required=True)
    parser.add_argument("--RemoteProcessProxy.public-key", dest="public_key", required=True)
    parser.add_argument("--RemoteProcessProxy.port-range", dest="port_range", default="0..0")
    parser.add_argument("--RemoteProcessProxy.spark-context-initialization-mode",
                        dest="spark_mode", choices=["lazy", "eager", "none"], default="lazy")
    return parser.parse_known_args()[0]


def bound_sockets(count: int) -> list[socket.socket]:
    """Sockets bound to free ports (the caller closes them just before the kernel binds)."""
    socks = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("0.0.0.0", 0))  # the gateway connects from another host
        socks.append(sock)
    return socks


def sealed_payload(conn_info: dict, public_key: str) -> bytes:
    """The connection info, encrypted for the gateway (its 'version 1' payload)."""
    rsa_key = RSA.import_key(base64.b64decode(public_key))  # PEM body without header lines
    aes_key = get_random_bytes(16)
    sealed_key = PKCS1_v1_5.new(rsa_key).encrypt(aes_key)
    body = AES.new(aes_key, AES.MODE_ECB).encrypt(pad(json.dumps(conn_info).encode(), 16))
    payload = {"version": 1, "key": base64.b64encode(sealed_key).decode(),
               "conn_info": base64.b64encode(body).decode()}
    return base64.b64encode(json.dumps(payload).encode())


def send_to_gateway(address: str, data: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(data)


def serve_gateway_requests(server: socket.socket) -> None:
    """The comm port: signals for the kernel, and shutdown."""
    server.listen(8)
    while True:
        conn, _ = server.accept()
        with conn:
            data = b""
            while chunk := conn.recv(1024):
                data += chunk
                if data.rstrip().endswith(b"}"):
                    break
        try:
            request = json.loads(data or b"{}")
        except ValueError:
            continue
        if request.get("shutdown"):  # after the kernel's own shutdown_request, if it is still up
            os._exit(0)
        elif int(request.get("signum", 0)) > 0:
            os.kill(os.getpid(), int(request["signum"]))


def start_spark(namespace: dict) -> None:
    from pyspark.sql import SparkSession

    spark = SparkSession.builder.getOrCreate()
    namespace.update(spark=spark, sc=spark.sparkContext)


def main() -> None:
    opts = parse_args()
    socks = bound_sockets(len(CHANNELS) + 1)
    ports = [int(s.getsockname()[1]) for s in socks]
    conn_info = dict(zip(CHANNELS, ports, strict=False), ip="0.0.0.0",
                     key=str(uuid.uuid4()), transport="tcp", signature_scheme="hmac-sha256",
                     kernel_name="")
    conn_file = os.path.join(tempfile.mkdtemp(), f"kernel-{opts.kernel_id}.json")
    with open(conn_file, "w") as f:
        json.dump(conn_info, f)
    comm = socks[-1]
    for sock in socks[:-1]:
        sock.close()
    threading.Thread(target=serve_gateway_requests, args=(comm,), daemon=True).start()

    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(["-f", conn_file])
    namespace = app.kernel.shell.user_ns
    if opts.spark_mode == "eager":
        start_spark(namespace)
    elif opts.spark_mode == "lazy":
        threading.Thread(target=start_spark, args=(namespace,), daemon=True).start()
    report = {**conn_info, "kernel_id": opts.kernel_id, "comm_port": ports[-1],
              "pid": os.getpid(), "pgid": os.getpgid(0)}
    send_to_gateway(opts.response_address, sealed_payload(report, opts.public_key))
    print(f"launcher: kernel {opts.kernel_id} sent its connection info at {time.time():.3f} "
          f"(ports {ports})", file=sys.__stderr__, flush=True)  # sys.stderr goes to iopub now
    app.start()


if __name__ == "__main__":
    main()
