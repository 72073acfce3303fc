// Package rp is what a relying party embeds to check ATR's statements
// without trusting ATR:
//
//   - an agent certificate (Verifier): the chain to pinned roots
//     (ca.Verifier), its revocation status from CRLs (held, or fetched from
//     the distribution points) and OCSP (the leaf's AIA), each checked
//     against the right issuer and for freshness, and optionally the
//     registry's own answer (POST /v1/verify) through an OnlineChecker the
//     caller provides; a refusal is a Result with a typed Reason (revoked,
//     superseded, issuer_revoked, expired, untrusted_chain,
//     wrong_trust_domain, …) and its evidence;
//   - a certificate with its log receipt, offline (ReceiptVerifier);
//   - checkpoints of the transparency log, signed by the log key and
//     cosigned by witnesses under a k-of-n WitnessPolicy (VerifyCheckpoint,
//     c2sp.org/tlog-cosignature);
//   - the log itself, for auditors (Auditor): the checkpoint extends the one
//     seen before, the entries are canonical and hash to the signed root, a
//     certificate's issuance (agent or the registry's TLS server
//     certificate) is included; a refusal is an *AuditError with the
//     evidence (index, entry, expected and computed hashes, checkpoints);
//   - for owners, a log monitor that finds every certificate issued under
//     watched names (Monitor, ResolveWatched, LoadKnown);
//   - a follower of the registry's event stream that keeps a verified local
//     revocation set (Follower, GET /v1/log/events).
//
// The loaders (LoadCABundle, LoadCRL, LoadLogKey, LoadVRFKey,
// LoadWitnessPolicy, LoadKnown) read the files a relying party pins, with
// size caps.
//
// It imports only ca, the log package (registry/translog), the note and
// tlog libraries and x/crypto/ocsp: never the API client or the registry.
// Follower and Verifier (to fetch CRLs and OCSP answers, when asked) make
// network calls, to the URLs their caller gives or the certificate names;
// Monitor and Auditor read the log through the small interfaces their
// caller provides (LogSource, AuditLog). All verify everything they read.
package rp
