"""A device written for AWS the way the 2018 sample's device is, in the Python standard library.

The sample device (AWSIoTPythonSDK 1.5.x, Python) posts its JSON request without a Content-Type,
reads `endpointAddress` from the answer, and calls configureEndpoint(endpointAddress, 8883): the
endpoint is a host name, the port is always 8883, and the server certificate must be valid for
that host (ssl.match_hostname, which accepts IP addresses in the subjectAltName). This script does
the same, speaking MQTT 3.1.1 by hand so it needs nothing beyond Python 3, and exits 0 only if
the endpoint accepted the connection and acknowledged one QoS 1 publish.

Usage: python3 sample_era_device.py <provisioning URL> <request.json> <root CA PEM> <work dir>
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import struct
import sys
import urllib.request

MQTT_PORT = 8883


def encode_length(length: int) -> bytes:
    encoded = bytearray()
    while True:
        byte, length = length % 128, length // 128
        encoded.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(encoded)


def mqtt_string(text: str) -> bytes:
    data = text.encode("utf-8")
    return struct.pack("!H", len(data)) + data


def packet(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + encode_length(len(body)) + body


def read_packet(tls: ssl.SSLSocket) -> tuple[int, bytes]:
    header = tls.recv(1)
    if not header:
        raise ConnectionError("the endpoint closed the connection")
    length, shift = 0, 0
    while True:
        byte = tls.recv(1)[0]
        length |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    body = b""
    while len(body) < length:
        chunk = tls.recv(length - len(body))
        if not chunk:
            raise ConnectionError("the endpoint closed the connection")
        body += chunk
    return header[0], body


def main() -> int:
    url, request_file, root_ca, work_dir = sys.argv[1:5]
    with open(request_file, "rb") as handle:
        body = handle.read()
    # Like requests.post(url, data=json.dumps(payload)): no Content-Type header.
    request = urllib.request.Request(url, data=body, method="POST")
    request.remove_header("Content-type")
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    if answer.get("status") != "success":
        print(f"not provisioned: {answer}")
        return 3
    endpoint, region = answer["endpointAddress"], answer["region"]
    cert_file = os.path.join(work_dir, "device.cert.pem")
    key_file = os.path.join(work_dir, "device.key.pem")
    with open(cert_file, "w") as handle:
        handle.write(answer["certificatePem"])
    with open(key_file, "w") as handle:
        handle.write(answer["PrivateKey"])

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(root_ca)
    context.load_cert_chain(cert_file, key_file)
    thing_name = json.loads(body)["thing-name"]
    with socket.create_connection((endpoint, MQTT_PORT), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=endpoint) as tls:
            connect = mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 30) + mqtt_string(thing_name)
            tls.sendall(packet(0x10, connect))
            kind, connack = read_packet(tls)
            if kind != 0x20 or connack[1] != 0:
                print(f"connection refused by {endpoint}:{MQTT_PORT} (CONNACK {connack[1]})")
                return 5
            topic = f"data/{thing_name}/misc"
            message = json.dumps({"thing-name": thing_name, "global": "device provisioning"})
            tls.sendall(packet(0x32, mqtt_string(topic) + struct.pack("!H", 1) + message.encode()))
            kind, puback = read_packet(tls)
            if kind != 0x40 or puback != struct.pack("!H", 1):
                print(f"publish not acknowledged (packet type {kind:#x})")
                return 6
            tls.sendall(packet(0xE0, b""))
    print(f"connected to {endpoint}:{MQTT_PORT} in {region} and published to {topic}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
