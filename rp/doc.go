// Package rp is what a relying party embeds to check ATR's statements
// without trusting ATR: checkpoints of the transparency log, signed by the
// log key and cosigned by witnesses under a k-of-n WitnessPolicy
// (VerifyCheckpoint, c2sp.org/tlog-cosignature).
//
// It imports only the log package (registry/translog) and the note
// libraries; it makes no network calls.
package rp
