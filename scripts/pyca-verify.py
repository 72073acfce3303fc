#!/usr/bin/env python3
"""pyca-verify.py — verify an ATR agent certificate as a Python relying party
does: pyca/cryptography's X.509 client verifier (PolicyBuilder, cryptography
43 or newer; scripts/install-pyca.sh provides it on Debian 12).

    pyca-verify.py --roots root.pem [--intermediates bundle.pem]
                   [--time 2026-03-01T12:00:00Z] [--want-uri spiffe://…] leaf.pem
    pyca-verify.py --check

Prints "OK <subject URIs>" and exits 0 when the chain verifies; prints
"REJECTED: <pyca's reason>" and exits 1 when pyca refuses it; exits 3 when
this Python has no pyca verifier (--check only tests for it); 2 on usage
errors. --intermediates may hold roots too (ATR's bundle.pem does): pyca
ignores untrusted certificates it does not need.
"""

import argparse
import datetime
import sys

EXIT_OK, EXIT_REJECTED, EXIT_USAGE, EXIT_NO_VERIFIER = 0, 1, 2, 3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="only check that pyca's verifier is importable")
    p.add_argument("--roots", help="PEM file of trust anchors")
    p.add_argument("--intermediates", help="PEM file of untrusted intermediates")
    p.add_argument("--time", help="validation time, RFC 3339 (default: now)")
    p.add_argument("--want-uri", help="fail unless the verified client's URI SANs include this one")
    p.add_argument("leaf", nargs="?", help="PEM file of the leaf certificate")
    args = p.parse_args()

    try:
        import cryptography
        from cryptography import x509
        from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
    except ImportError as e:
        print(f"pyca-verify: no pyca/cryptography X.509 verifier in this Python: {e}", file=sys.stderr)
        return EXIT_NO_VERIFIER
    if args.check:
        print(f"cryptography {cryptography.__version__}")
        return EXIT_OK
    if not args.roots or not args.leaf:
        p.print_usage(sys.stderr)
        return EXIT_USAGE

    def load(path):
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())

    roots = load(args.roots)
    intermediates = load(args.intermediates) if args.intermediates else []
    leaves = load(args.leaf)
    if len(leaves) != 1:
        print(f"pyca-verify: {args.leaf} holds {len(leaves)} certificates, want 1", file=sys.stderr)
        return EXIT_USAGE
    when = datetime.datetime.now(datetime.timezone.utc)
    if args.time:
        when = datetime.datetime.fromisoformat(args.time.replace("Z", "+00:00"))

    builder = PolicyBuilder().store(Store(roots)).time(when)
    try:
        verified = builder.build_client_verifier().verify(leaves[0], intermediates)
    except VerificationError as e:
        print(f"REJECTED: {e}")
        return EXIT_REJECTED
    uris = [n.value for n in (verified.subjects or []) if isinstance(n, x509.UniformResourceIdentifier)]
    if args.want_uri and args.want_uri not in uris:
        print(f"REJECTED: verified, but the subject URIs {uris} lack {args.want_uri}")
        return EXIT_REJECTED
    print("OK " + " ".join(uris))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
