"""moto as the local AWS, with the few behaviours our tests depend on made faithful.

moto is patched in-process before ThreadedMotoServer starts (its /moto-api/config endpoint
ignores the iot settings, so this cannot be done from outside):

- certificateId is SHA-256 of the certificate's DER, as AWS computes it (moto: of the PEM text).
- CreateCertificateFromCsr issues a certificate for the CSR's public key with the CSR's subject,
  signed by the local CA (moto: a fresh key pair, signed by a throwaway key, CSR key ignored).
  CreateKeysAndCertificate is signed by the local CA too, so local MQTT brokers can verify both.
- A malformed CSR raises InvalidRequestException (moto: HTTP 500 with a non-JSON body).
- setAsActive=false is honoured (moto reads the query string "false" as true).
- DescribeEndpoint is stable per region (moto: a new random address on every call); regions in
  the --endpoints mapping answer with the local MQTT broker's address: a bare host (port 8883,
  as AWS answers), or host:port.
- CreateThing on an existing name fails with ResourceAlreadyExistsException unless the request
  is identical (AWS behaviour; moto silently overwrites the thing).
- RegisterCertificate finds the CA by the certificate, not by its PEM text (moto compares text,
  so a CA PEM with other line breaks registers the certificate under no CA).
- DynamoDB requests run one at a time (one process-wide lock). moto's DynamoDB backend takes no
  lock: two concurrent conditional writes to one item could both succeed, which DynamoDB never
  allows (writes are atomic per item). Concurrency tests must test our code, not moto.
- TransactWriteItems rolls a cancelled transaction back from copies of the items it touched
  (moto: a deep copy of the whole table per item of the transaction, seconds per call on a table
  of 20,000 records, past the SDK's 3 s call timeout; gdp-admin import writes that way).

Usage: python3 moto_launcher.py --port 17402 --ca-cert ca.pem --ca-key ca-key.pem
       [--endpoints '{"eu-central-1": "127.67.248.1"}'] [--no-stdin-watch]
Prints "MOTO_READY http://127.0.0.1:PORT" once it answers; exits on SIGTERM/SIGINT or when
stdin closes (so it dies with the process that started it).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import sys
import threading
from datetime import datetime, timedelta, timezone
from typing import Any

MOTO_VERSION = "5.2.1"


def import_moto() -> None:
    # tests/local/moto-python.ts picks (or installs into .local/venv) a Python with moto; this
    # only guards against being started by hand with another one.
    try:
        import moto  # noqa: F401
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer  # noqa: F401
    except ImportError as error:
        print(
            f"moto[server]=={MOTO_VERSION} is not installed for {sys.executable} ({error}); install it with "
            "python3 -m venv .local/venv && .local/venv/bin/pip install -r tests/local/requirements.txt",
            file=sys.stderr,
            flush=True,
        )
        raise SystemExit(3)
    import moto

    if moto.__version__ != MOTO_VERSION:
        print(
            f"warning: moto {moto.__version__} found; the patches were written against {MOTO_VERSION}",
            file=sys.stderr,
            flush=True,
        )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="moto server with local-stack patches")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ca-cert", required=True, help="PEM of the local CA certificate")
    parser.add_argument("--ca-key", required=True, help="PEM (PKCS#8) of the local CA private key")
    parser.add_argument(
        "--endpoints",
        default="{}",
        help='JSON mapping region -> "host" or "host:port" answered by DescribeEndpoint(iot:Data-ATS)',
    )
    parser.add_argument("--no-stdin-watch", action="store_true", help="do not exit when stdin closes")
    # For measuring the race the DynamoDB lock prevents; the stack never sets these.
    parser.add_argument(
        "--unserialised-dynamodb", action="store_true", help="leave moto's DynamoDB without its lock"
    )
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval (e.g. 1e-6 makes races likely)"
    )
    return parser.parse_args()


def as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return bool(value)


def apply_patches(ca_cert_path: str, ca_key_path: str, endpoints: dict[str, str]) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from moto.core.config import default_user_config
    from moto.iot import models
    from moto.iot.exceptions import InvalidRequestException, ResourceAlreadyExistsException
    from moto.core.utils import utcnow

    # certificateId = SHA-256(DER), read by moto.settings.iot_use_valid_cert() at each call.
    default_user_config.setdefault("iot", {})["use_valid_cert"] = True  # type: ignore[typeddict-item]

    with open(ca_cert_path, "rb") as handle:
        ca_cert = x509.load_pem_x509_certificate(handle.read())
    with open(ca_key_path, "rb") as handle:
        ca_key = serialization.load_pem_private_key(handle.read(), password=None)
    if not isinstance(ca_key, (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey)):
        raise SystemExit("the local CA key must be RSA or EC")

    def issue_pem(subject: x509.Name, public_key: Any) -> str:
        now = datetime.now(timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            # AWS IoT issues device certificates valid until 2049-12-31.
            .not_valid_after(datetime(2049, 12, 31, 23, 59, 59, tzinfo=timezone.utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        certificate = builder.sign(ca_key, hashes.SHA256())
        return certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")

    backend_class = models.IoTBackend

    def generate_certificate_pem(self: Any, domain_name: str, subject: Any, key: Any = None) -> str:
        # CreateKeysAndCertificate path: moto generated `key` for the device; sign with the CA.
        if key is None:
            key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        return issue_pem(subject, key.public_key())

    def create_certificate_from_csr(self: Any, csr: str, set_as_active: Any) -> Any:
        try:
            request = x509.load_pem_x509_csr((csr or "").encode("utf-8"))
        except ValueError:
            # AWS answers a malformed CSR with InvalidRequestException (moto: HTTP 500, not JSON).
            raise InvalidRequestException("The certificate signing request is not valid.")
        pem = issue_pem(request.subject, request.public_key())
        return self.register_certificate(
            pem, ca_certificate_pem=None, set_as_active=as_bool(set_as_active), status="INACTIVE"
        )

    original_create_keys = backend_class.create_keys_and_certificate

    def create_keys_and_certificate(self: Any, set_as_active: Any) -> Any:
        return original_create_keys(self, as_bool(set_as_active))

    class StableEndpoint:
        def __init__(self, endpoint_type: str, address: str) -> None:
            self.endpoint_type = endpoint_type
            self.endpoint = address

        def to_get_dict(self) -> dict[str, str]:
            return {"endpointAddress": self.endpoint}

        def to_dict(self) -> dict[str, str]:
            return {"endpointAddress": self.endpoint}

    def describe_endpoint(self: Any, endpoint_type: str) -> Any:
        # Validates the type exactly like moto does (raises InvalidRequestException).
        models.FakeEndpoint(endpoint_type, self.region_name)
        prefix = hashlib.sha256(f"{self.account_id}:{self.region_name}".encode()).hexdigest()[:14]
        region = self.region_name
        if endpoint_type == "iot:Data-ATS" and region in endpoints:
            address = endpoints[region]
        elif endpoint_type == "iot:Data":
            address = f"{prefix}.iot.{region}.amazonaws.com"
        elif endpoint_type == "iot:Data-ATS":
            address = f"{prefix}-ats.iot.{region}.amazonaws.com"
        elif endpoint_type == "iot:CredentialProvider":
            address = f"{prefix}.credentials.iot.{region}.amazonaws.com"
        else:
            address = f"{prefix}.jobs.iot.{region}.amazonaws.com"
        self.endpoint = StableEndpoint(endpoint_type, address)
        return self.endpoint

    original_create_thing = backend_class.create_thing

    def create_thing(
        self: Any,
        thing_name: str,
        thing_type_name: str,
        attribute_payload: dict[str, Any] | None,
        billing_group_name: str | None = None,
    ) -> Any:
        existing = next((t for t in self.things.values() if t.thing_name == thing_name), None)
        if existing is not None:
            attributes = (attribute_payload or {}).get("attributes", {}) or {}
            existing_type = existing.thing_type.thing_type_name if existing.thing_type else None
            identical = (
                existing_type == (thing_type_name or None)
                and existing.attributes == attributes
                and existing.billing_group_name == billing_group_name
            )
            if identical:
                return existing
            raise ResourceAlreadyExistsException(
                f"Thing {thing_name} already exists in account with different attributes",
                existing.thing_id,
                existing.arn,
            )
        return original_create_thing(
            self, thing_name, thing_type_name, attribute_payload, billing_group_name
        )

    original_update_certificate = backend_class.update_certificate

    def update_certificate(self: Any, certificate_id: str, new_status: str) -> None:
        # AWS: lastModifiedDate is "the date and time the certificate was last modified"; moto
        # leaves it at the creation date. The reconciler's quarantine dates itself by it.
        original_update_certificate(self, certificate_id, new_status)
        self.describe_certificate(certificate_id).last_modified_date = utcnow()

    def pem_der(pem: str | None) -> bytes | None:
        try:
            return x509.load_pem_x509_certificate((pem or "").encode("ascii")).public_bytes(
                serialization.Encoding.DER
            )
        except ValueError:
            return None

    def find_ca_certificate(self: Any, ca_certificate_pem: str | None) -> str | None:
        wanted = pem_der(ca_certificate_pem)
        for ca_cert in self.ca_certificates.values():
            if ca_cert.certificate_pem == ca_certificate_pem or (
                wanted is not None and pem_der(ca_cert.certificate_pem) == wanted
            ):
                return ca_cert.certificate_id
        return None

    backend_class._find_ca_certificate = find_ca_certificate  # type: ignore[method-assign]
    backend_class._generate_certificate_pem = generate_certificate_pem  # type: ignore[method-assign]
    backend_class.create_certificate_from_csr = create_certificate_from_csr  # type: ignore[method-assign]
    backend_class.create_keys_and_certificate = create_keys_and_certificate  # type: ignore[method-assign]
    backend_class.describe_endpoint = describe_endpoint  # type: ignore[method-assign]
    backend_class.create_thing = create_thing  # type: ignore[method-assign]
    backend_class.update_certificate = update_certificate  # type: ignore[method-assign]


def serialise_dynamodb() -> None:
    """One DynamoDB request at a time, reads included (a read must not see half a write)."""
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    call_action = DynamoHandler.call_action

    def serialised_call_action(self: Any) -> Any:
        with lock:
            return call_action(self)

    DynamoHandler.call_action = serialised_call_action  # type: ignore[method-assign]


def cheap_transaction_rollback() -> None:
    """TransactWriteItems keeps copies of the items it touches, not of the whole table.

    moto 5.2.1 deep-copies the table once per item of a transaction, to restore it if the
    transaction is cancelled. DynamoDB's rollback only concerns the transaction's own items, so
    restoring those gives the same result; with requests run one at a time (serialise_dynamodb)
    nothing else can change them meanwhile.
    """
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    class TablesNotCopied:
        """`copy` as transact_write_items sees it: a table comes back as itself."""

        @staticmethod
        def deepcopy(value: Any, memo: Any = None) -> Any:
            return value if isinstance(value, Table) else copy.deepcopy(value, memo)

    transact_write_items = DynamoDBBackend.transact_write_items

    def touched_items(self: Any, transact_items: list[dict[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        touched = []
        for entry in transact_items:
            op = next(iter(entry.values()), None)
            table = self.tables.get(op.get("TableName")) if isinstance(op, dict) else None
            attrs = (op.get("Item") or op.get("Key")) if isinstance(op, dict) else None
            if table is None or not attrs or table.hash_key_attr not in attrs:
                continue
            hash_key = DynamoType(attrs[table.hash_key_attr])
            range_key = None
            if table.range_key_attr is not None:
                if table.range_key_attr not in attrs:
                    continue
                range_key = DynamoType(attrs[table.range_key_attr])
            old = table.get_item(hash_key, range_key)
            touched.append((table, hash_key, range_key, copy.deepcopy(old)))
        return touched

    def restore(touched: list[tuple[Any, Any, Any, Any]]) -> None:
        for table, hash_key, range_key, old in reversed(touched):
            if old is None:
                table.delete_item(hash_key, range_key)
            elif range_key is not None:
                table.items[hash_key][range_key] = old
            else:
                table.items[hash_key] = old

    def transact_write_items_with_item_rollback(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        touched = touched_items(self, transact_items)
        models.copy = TablesNotCopied  # type: ignore[assignment]
        try:
            return transact_write_items(self, transact_items)
        except Exception:
            restore(touched)
            raise
        finally:
            models.copy = copy  # type: ignore[assignment]

    DynamoDBBackend.transact_write_items = transact_write_items_with_item_rollback  # type: ignore[method-assign]


def main() -> None:
    args = parse_args()
    import_moto()
    endpoints = json.loads(args.endpoints)
    if not isinstance(endpoints, dict):
        raise SystemExit("--endpoints must be a JSON object")
    apply_patches(args.ca_cert, args.ca_key, {str(k): str(v) for k, v in endpoints.items()})
    if not args.unserialised_dynamodb:
        serialise_dynamodb()
    cheap_transaction_rollback()
    if args.switch_interval is not None:
        sys.setswitchinterval(args.switch_interval)

    from moto.moto_server.threaded_moto_server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address=args.host, port=args.port, verbose=False)
    server.start()
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not args.no_stdin_watch:

        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"MOTO_READY http://{args.host}:{args.port}", flush=True)
    stop.wait()
    # All state is in memory: exit at once. server.stop() waits for werkzeug's poll interval and
    # request threads blocked on keep-alive connections would hold interpreter exit for seconds.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
