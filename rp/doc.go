// Package rp is what a relying party embeds to check ATR's statements
// without trusting ATR: checkpoints of the transparency log, signed by the
// log key and cosigned by witnesses under a k-of-n WitnessPolicy
// (VerifyCheckpoint, c2sp.org/tlog-cosignature); a certificate with its log
// receipt, offline (ReceiptVerifier); and, for owners, a log monitor that
// finds every certificate issued under watched names (Monitor); and a
// follower of the registry's event stream that keeps a verified local
// revocation set (Follower, GET /v1/log/events).
//
// It imports only ca, the log package (registry/translog) and the note
// libraries. Only Follower makes network calls (to the URL its caller
// gives); Monitor reads the log through the LogSource its caller provides.
// Both verify everything they read.
package rp
