// Package hsm is ATR's only door to a PKCS#11 token. Every CA private key
// lives on the token and never leaves it; this package hands out
// crypto.Signers that sign on the token, and nothing else.
//
// # Opening a token
//
// A token is selected by label or by serial number, never by slot number
// (SoftHSM2 renumbers slots when tokens are added). The user PIN comes from
// ReadPIN (a file, or an environment variable's value), never from a
// command-line argument, and is never written to an error or a log line.
//
//	pin, err := hsm.ReadPIN(os.Getenv("ATR_PKCS11_PIN_FILE"), os.Getenv("ATR_PKCS11_PIN"))
//	tok, err := hsm.Open(ctx, hsm.Config{Module: "/usr/lib/softhsm/libsofthsm2.so",
//		TokenLabel: "atr-issuing", PIN: pin}, log)
//	defer tok.Close()
//
// Open sets crypto11's PoolWaitTimeout (default 5s; crypto11's own default
// waits forever) and MaxSessions (default 8), and refuses a label that more
// than one token carries.
//
// # Naming keys
//
// Keys are named by RFC 7512 URIs such as
//
//	pkcs11:token=atr-issuing;object=issuing-2026;id=%01?pin-source=/run/secrets/pin
//
// ParseURI accepts the attributes token, serial, object, id and type=private
// in the path and pin-source, module-path in the query. It rejects duplicate
// attributes, unknown attributes (a consumer that ignored them would match
// more than the author meant), slot-id (never select by slot), pin-value (a
// PIN must not travel inside a string that ends up in configs and logs), an
// empty object, and conflicting selectors (token and serial, module-name and
// module-path). A key URI must name an object or an id.
//
// # Signing and recovery
//
// Token.Signer resolves a URI to exactly one key pair (ErrKeyNotFound when
// there is none — crypto11 itself answers "nil, nil" — and an error when more
// than one matches). The *Signer implements crypto.Signer. When the token
// reports trouble (CKR_SESSION_HANDLE_INVALID, CKR_SESSION_CLOSED,
// CKR_DEVICE_ERROR, CKR_DEVICE_REMOVED, CKR_TOKEN_NOT_PRESENT,
// CKR_USER_NOT_LOGGED_IN, CKR_CRYPTOKI_NOT_INITIALIZED, stale object handles,
// or a session-pool timeout), the Token is marked unhealthy, the failing call
// returns an error wrapping ErrUnavailable, and a background goroutine
// rebuilds the crypto11 context (close, Configure and log in again) with
// backoff. Meanwhile every Sign fails closed at once with ErrUnavailable and
// Healthy reports ErrUnavailable. After a rebuild each Signer finds its key
// again by CKA_ID and CKA_LABEL and refuses to sign unless the public key is
// the one it was created with; every signature is also verified against that
// public key before it is returned, so a stale or substituted key object can
// never produce a signature. Callers keep their *Signer: no restart and no
// re-open is needed. A wrong or locked PIN during a rebuild stops the retries
// (real HSMs lock the token after a few bad PINs); the Token stays unhealthy.
//
// # Keys and certificates on the token
//
// GenerateKey creates ECDSA P-256/P-384 or RSA 3072/4096 key pairs with a
// random 16-byte CKA_ID, the label, CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE,
// CKA_SIGN true and CKA_EXTRACTABLE, CKA_DECRYPT, CKA_UNWRAP, CKA_DERIVE,
// CKA_SIGN_RECOVER false (and CKA_ENCRYPT, CKA_WRAP false on the public half);
// it refuses (ErrExists) a label that any object on the token already has.
// ImportCertificate and Certificates manage certificate objects (the issuing
// certificate and the roots verification trusts). Objects lists every object
// with the attributes a key ceremony transcript records. CheckKey is the
// start-up check: the key matches its certificate, is sensitive, was never
// extractable and may only sign.
//
// GenerateEd25519Key and Ed25519Signer do the same for Ed25519 keys (the
// log's key for witnesses) with raw PKCS#11 calls, since crypto11 has no
// Ed25519: CKM_EC_EDWARDS_KEY_PAIR_GEN with CKA_EC_PARAMS id-Ed25519, and
// CKM_EDDSA over the whole message; an Ed25519Signer is a crypto.Signer
// (crypto.Hash(0)) that checks each signature with ed25519.Verify, finds
// its key again after a token recovery, and has CheckPolicy for the
// attribute policy.
//
// The package holds no package-level mutable state; every Token owns its
// goroutine, which Close stops. Tests use package hsmtest, which creates
// real SoftHSM2 tokens in a temporary directory.
package hsm
